//! Progressive JPEG decoded straight to a DCT-scaled size, keeping only the
//! coefficients the scaled IDCT uses.
//!
//! libjpeg keeps every coefficient of a progressive image (64 x 2 bytes a block, over
//! 100 MiB for a 16-megapixel photo) until the last scan, and corrects them one by one
//! in its refinement scans, which is where most of a corpus's decoding time goes. For a
//! thumbnail at n/8 scale only the top-left n x n coefficients of each block matter.
//! This decoder keeps those, plus one bit per coefficient saying whether it is nonzero
//! yet (what the refinement scans need to stay in step), and skips the correction bits
//! of every other coefficient in bulk. No crate decodes a coefficient subset, so the
//! entropy decoding (ITU T.81 G.1.2) is here; everything it does not handle (baseline,
//! arithmetic coding, 12-bit, CMYK, sampling that would need upsampling) is left to
//! libjpeg by returning `Ok(None)`.

use image::{DynamicImage, GrayImage, RgbImage};

use super::ThumbnailError;

/// Zig-zag index -> natural (row-major) position in the 8x8 block.
const NATURAL: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

fn malformed(what: &str) -> ThumbnailError {
    ThumbnailError::Decode(format!("progressive JPEG: {what}"))
}

fn truncated() -> ThumbnailError {
    ThumbnailError::Decode("progressive JPEG: the file ends early".into())
}

/// A canonical Huffman table with a 9-bit lookahead.
struct Huffman {
    /// `(length << 8) | symbol` for codes of up to 9 bits; 0: longer.
    fast: Vec<u16>,
    /// Per code length 1..=16: the largest code (exclusive end), and the index of its
    /// first symbol minus its first code.
    maxcode: [i32; 18],
    valoffset: [i32; 17],
    symbols: Vec<u8>,
}

const LOOKAHEAD: u32 = 9;

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Result<Self, ThumbnailError> {
        let mut fast = vec![0u16; 1 << LOOKAHEAD];
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 17];
        let (mut code, mut index) = (0i32, 0usize);
        for len in 1..=16usize {
            let n = usize::from(counts[len - 1]);
            valoffset[len] = index as i32 - code;
            for _ in 0..n {
                if code >= 1 << len {
                    return Err(malformed("bad Huffman table"));
                }
                if len as u32 <= LOOKAHEAD {
                    let shift = LOOKAHEAD - len as u32;
                    let first = (code as usize) << shift;
                    let entry = ((len as u16) << 8) | u16::from(symbols[index]);
                    fast[first..first + (1 << shift)].fill(entry);
                }
                code += 1;
                index += 1;
            }
            maxcode[len] = code;
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Self {
            fast,
            maxcode,
            valoffset,
            symbols,
        })
    }
}

/// Bits of entropy-coded data, most significant first, with 0xFF00 unstuffed. Stops at
/// a marker (then feeds zeros, as T.81 pads); running out of data is an error.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    /// Valid bits at the top.
    acc: u64,
    count: u32,
    at_marker: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            acc: 0,
            count: 0,
            at_marker: false,
        }
    }

    /// At least 57 bits in the buffer.
    #[inline(always)]
    fn fill(&mut self) -> Result<(), ThumbnailError> {
        // Whole bytes at once while no 0xFF (stuffing or a marker) is among them.
        if !self.at_marker
            && let Some(chunk) = self.data.get(self.pos..self.pos + 8)
        {
            let chunk = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
            let inverted = !chunk;
            let has_ff =
                inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080;
            if has_ff == 0 {
                let bytes = (64 - self.count) / 8;
                let bits = bytes * 8;
                self.acc |= (chunk >> (64 - bits)) << (64 - self.count - bits);
                self.count += bits;
                self.pos += bytes as usize;
                return Ok(());
            }
        }
        self.fill_slowly()
    }

    fn fill_slowly(&mut self) -> Result<(), ThumbnailError> {
        while self.count <= 56 {
            let byte = if self.at_marker {
                0
            } else {
                let b = *self.data.get(self.pos).ok_or_else(truncated)?;
                if b == 0xFF {
                    match *self.data.get(self.pos + 1).ok_or_else(truncated)? {
                        0 => {
                            self.pos += 2;
                            0xFF
                        }
                        _ => {
                            self.at_marker = true;
                            0
                        }
                    }
                } else {
                    self.pos += 1;
                    b
                }
            };
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
        Ok(())
    }

    /// Skip `n` (0..=64) bits.
    #[inline(always)]
    fn skip(&mut self, mut n: u32) -> Result<(), ThumbnailError> {
        while n > 32 {
            self.get(32)?;
            n -= 32;
        }
        if n > 0 {
            self.get(n)?;
        }
        Ok(())
    }

    /// The next `n` (1..=32) bits.
    #[inline(always)]
    fn get(&mut self, n: u32) -> Result<u32, ThumbnailError> {
        if self.count < n {
            self.fill()?;
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.count -= n;
        Ok(v)
    }

    /// The next `n` (0..=64) bits, the first in bit `n - 1`.
    fn get_wide(&mut self, n: u32) -> Result<u64, ThumbnailError> {
        if n <= 32 {
            return if n == 0 {
                Ok(0)
            } else {
                self.get(n).map(u64::from)
            };
        }
        let high = u64::from(self.get(32)?);
        Ok((high << (n - 32)) | u64::from(self.get(n - 32)?))
    }

    #[inline(always)]
    fn decode(&mut self, table: &Huffman) -> Result<u8, ThumbnailError> {
        if self.count < 16 {
            self.fill()?;
        }
        let entry = table.fast[(self.acc >> (64 - LOOKAHEAD)) as usize];
        if entry != 0 {
            let len = u32::from(entry >> 8);
            self.acc <<= len;
            self.count -= len;
            return Ok(entry as u8);
        }
        let mut len = LOOKAHEAD as usize + 1;
        loop {
            let code = (self.acc >> (64 - len)) as i32;
            if code < table.maxcode[len] {
                self.acc <<= len;
                self.count -= len as u32;
                let index = (table.valoffset[len] + code) as usize;
                return table
                    .symbols
                    .get(index)
                    .copied()
                    .ok_or_else(|| malformed("bad Huffman code"));
            }
            len += 1;
            if len > 16 {
                return Err(malformed("bad Huffman code"));
            }
        }
    }

    /// `s` bits read as a signed magnitude category value (T.81 F.2.2.1 EXTEND).
    #[inline]
    fn receive_extend(&mut self, s: u8) -> Result<i32, ThumbnailError> {
        if s == 0 {
            return Ok(0);
        }
        if s > 16 {
            return Err(malformed("bad coefficient size"));
        }
        let v = self.get(u32::from(s))? as i32;
        Ok(if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        })
    }

    /// Skip to the restart marker expected next, past it.
    fn restart(&mut self) -> Result<(), ThumbnailError> {
        self.pos = self.end();
        self.acc = 0;
        self.count = 0;
        self.at_marker = false;
        match (self.data.get(self.pos), self.data.get(self.pos + 1)) {
            (Some(0xFF), Some(0xD0..=0xD7)) => {
                self.pos += 2;
                Ok(())
            }
            (None, _) | (_, None) => Err(truncated()),
            _ => Err(malformed("missing restart marker")),
        }
    }

    /// Where the marker after the scan starts: past the entropy-coded bytes not read
    /// yet (the last bits are padding).
    fn end(&self) -> usize {
        let mut at = self.pos;
        while at + 1 < self.data.len() && !(self.data[at] == 0xFF && self.data[at + 1] != 0) {
            at += 1;
        }
        at
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Blocks that hold data (a single-component scan covers these).
    bw: usize,
    bh: usize,
    /// Blocks of the MCU-padded plane (interleaved scans cover these).
    pbw: usize,
    pbh: usize,
    /// Coefficient columns and rows kept, which is also the IDCT's output size.
    kh: usize,
    kv: usize,
    /// Zig-zag index -> slot in a block's kept coefficients (`u8::MAX`: not kept).
    slot: [u8; 64],
    /// Zig-zag indices kept, as a bit mask.
    kept: u64,
    coefs: Vec<i16>,
    nonzero: Vec<u64>,
    quant: Option<[u16; 64]>,
    dc_pred: i32,
}

impl Component {
    fn slots(&self) -> usize {
        self.kh * self.kv
    }
}

struct Frame {
    width: usize,
    height: usize,
    mcux: usize,
    mcuy: usize,
    components: Vec<Component>,
}

/// Scaled n/8: the output size and per-component kept coefficients, or None where a
/// component would need more than 8 (upsampling) or uneven sampling.
fn plan_frame(
    width: usize,
    height: usize,
    comps: &[(u8, usize, usize, usize)],
    scale: usize,
) -> Option<Frame> {
    let hmax = comps.iter().map(|c| c.1).max()?;
    let vmax = comps.iter().map(|c| c.2).max()?;
    let mcux = width.div_ceil(8 * hmax);
    let mcuy = height.div_ceil(8 * vmax);
    let mut components = Vec::new();
    for &(id, h, v, tq) in comps {
        if hmax % h != 0 || vmax % v != 0 {
            return None;
        }
        let (kh, kv) = (scale * hmax / h, scale * vmax / v);
        if kh > 8 || kv > 8 {
            return None;
        }
        let mut slot = [u8::MAX; 64];
        let mut kept = 0u64;
        let mut next = 0u8;
        for (zz, &nat) in NATURAL.iter().enumerate() {
            let (row, col) = (usize::from(nat) / 8, usize::from(nat) % 8);
            if row < kv && col < kh {
                slot[zz] = next;
                next += 1;
                kept |= 1 << zz;
            }
        }
        components.push(Component {
            id,
            h,
            v,
            tq,
            bw: (width * h).div_ceil(hmax).div_ceil(8),
            bh: (height * v).div_ceil(vmax).div_ceil(8),
            pbw: mcux * h,
            pbh: mcuy * v,
            kh,
            kv,
            slot,
            kept,
            coefs: Vec::new(),
            nonzero: Vec::new(),
            quant: None,
            dc_pred: 0,
        });
    }
    Some(Frame {
        width,
        height,
        mcux,
        mcuy,
        components,
    })
}

fn be16(data: &[u8], at: usize) -> Result<usize, ThumbnailError> {
    match data.get(at..at + 2) {
        Some(b) => Ok(usize::from(u16::from_be_bytes([b[0], b[1]]))),
        None => Err(truncated()),
    }
}

/// A marker segment's body (after its length field), and where the next one starts.
fn segment(data: &[u8], at: usize) -> Result<(&[u8], usize), ThumbnailError> {
    let len = be16(data, at)?;
    if len < 2 {
        return Err(malformed("bad segment length"));
    }
    let body = data.get(at + 2..at + len).ok_or_else(truncated)?;
    Ok((body, at + len))
}

/// The state of a decode between scans.
struct Decoder<'a> {
    data: &'a [u8],
    frame: Option<Frame>,
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    quant: [Option<[u16; 64]>; 4],
    restart_interval: usize,
    /// Adobe APP14 colour transform, if any.
    adobe_transform: Option<u8>,
    scale: usize,
}

/// Where the markers lead next.
enum Start {
    Unsupported,
    /// A scan whose SOS segment starts here.
    Scan(usize),
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8], scale: usize) -> Self {
        Self {
            data,
            frame: None,
            dc: Default::default(),
            ac: Default::default(),
            quant: [None; 4],
            restart_interval: 0,
            adobe_transform: None,
            scale,
        }
    }

    /// Read markers from `at` up to a scan; handles the tables and the frame header.
    /// What comes next: a scan, something this decoder leaves to libjpeg, or (None) EOI.
    fn next_scan(&mut self, mut at: usize) -> Result<Option<Start>, ThumbnailError> {
        loop {
            let (Some(&ff), Some(&marker)) = (self.data.get(at), self.data.get(at + 1)) else {
                return Err(truncated());
            };
            if ff != 0xFF {
                return Err(malformed("expected a marker"));
            }
            at += 2;
            match marker {
                0xFF => at -= 1, // fill byte
                0xD8 | 0xD0..=0xD7 | 0x01 => {}
                0xD9 => return Ok(None),
                0xC2 => {
                    let (body, next) = segment(self.data, at)?;
                    if self.frame.is_some() {
                        return Err(malformed("two frames"));
                    }
                    match self.read_frame(body)? {
                        Some(frame) => self.frame = Some(frame),
                        None => return Ok(Some(Start::Unsupported)),
                    }
                    at = next;
                }
                // Baseline, extended, lossless, hierarchical, arithmetic: not ours.
                0xC0 | 0xC1 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                    return Ok(Some(Start::Unsupported));
                }
                0xC4 => {
                    let (body, next) = segment(self.data, at)?;
                    self.read_huffman(body)?;
                    at = next;
                }
                0xDB => {
                    let (body, next) = segment(self.data, at)?;
                    self.read_quant(body)?;
                    at = next;
                }
                0xDD => {
                    let (body, next) = segment(self.data, at)?;
                    self.restart_interval = be16(body, 0)?;
                    at = next;
                }
                0xEE => {
                    let (body, next) = segment(self.data, at)?;
                    if body.len() >= 12 && body.starts_with(b"Adobe") {
                        self.adobe_transform = Some(body[11]);
                    }
                    at = next;
                }
                0xDA => {
                    if self.frame.is_none() {
                        return Err(malformed("scan before the frame"));
                    }
                    return Ok(Some(Start::Scan(at)));
                }
                // DNL, DAC and the rest: a height from DNL is not supported.
                0xDC | 0xCC => return Ok(Some(Start::Unsupported)),
                _ => {
                    let (_, next) = segment(self.data, at)?;
                    at = next;
                }
            }
        }
    }

    fn read_frame(&self, body: &[u8]) -> Result<Option<Frame>, ThumbnailError> {
        if body.len() < 6 {
            return Err(truncated());
        }
        let precision = body[0];
        let height = be16(body, 1)?;
        let width = be16(body, 3)?;
        let n = usize::from(body[5]);
        if precision != 8 || height == 0 || width == 0 || !(n == 1 || n == 3) {
            return Ok(None);
        }
        let mut comps = Vec::new();
        for i in 0..n {
            let c = body.get(6 + 3 * i..9 + 3 * i).ok_or_else(truncated)?;
            let (h, v, tq) = (
                usize::from(c[1] >> 4),
                usize::from(c[1] & 15),
                usize::from(c[2]),
            );
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || tq > 3 {
                return Err(malformed("bad component"));
            }
            comps.push((c[0], h, v, tq));
        }
        Ok(plan_frame(width, height, &comps, self.scale))
    }

    fn read_huffman(&mut self, mut body: &[u8]) -> Result<(), ThumbnailError> {
        while !body.is_empty() {
            let head = body.get(..17).ok_or_else(truncated)?;
            let (class, id) = (head[0] >> 4, usize::from(head[0] & 15));
            let counts: [u8; 16] = head[1..17].try_into().expect("16 bytes");
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let symbols = body.get(17..17 + total).ok_or_else(truncated)?.to_vec();
            if id > 3 || class > 1 {
                return Err(malformed("bad Huffman table id"));
            }
            let table = Some(Huffman::new(&counts, symbols)?);
            if class == 0 {
                self.dc[id] = table;
            } else {
                self.ac[id] = table;
            }
            body = &body[17 + total..];
        }
        Ok(())
    }

    fn read_quant(&mut self, mut body: &[u8]) -> Result<(), ThumbnailError> {
        while let Some(&pq_tq) = body.first() {
            let (precision, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
            if id > 3 || precision > 1 {
                return Err(malformed("bad quantisation table"));
            }
            let mut table = [0u16; 64];
            let size = if precision == 0 { 64 } else { 128 };
            let values = body.get(1..1 + size).ok_or_else(truncated)?;
            for (i, q) in table.iter_mut().enumerate() {
                *q = if precision == 0 {
                    u16::from(values[i])
                } else {
                    u16::from_be_bytes([values[2 * i], values[2 * i + 1]])
                };
            }
            self.quant[id] = Some(table);
            body = &body[1 + size..];
        }
        Ok(())
    }

    /// Decode one scan whose SOS segment starts at `at`; returns where it ends.
    fn scan(&mut self, at: usize) -> Result<usize, ThumbnailError> {
        let (body, start) = segment(self.data, at)?;
        let frame = self.frame.as_mut().expect("checked by next_scan");
        let n = usize::from(*body.first().ok_or_else(truncated)?);
        if n == 0 || n > frame.components.len() {
            return Err(malformed("bad scan"));
        }
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let s = body.get(1 + 2 * i..3 + 2 * i).ok_or_else(truncated)?;
            let index = frame
                .components
                .iter()
                .position(|c| c.id == s[0])
                .ok_or_else(|| malformed("unknown component in scan"))?;
            members.push((index, usize::from(s[1] >> 4), usize::from(s[1] & 15)));
        }
        let tail = body.get(1 + 2 * n..4 + 2 * n).ok_or_else(truncated)?;
        let (ss, se, ah, al) = (
            usize::from(tail[0]),
            usize::from(tail[1]),
            u32::from(tail[2] >> 4),
            u32::from(tail[2] & 15),
        );
        let dc = ss == 0;
        if se > 63 || ss > se || (dc && se != 0) || (!dc && n != 1) || al > 13 || ah > 13 {
            return Err(malformed("bad spectral selection"));
        }
        for &(index, td, ta) in &members {
            let c = &mut frame.components[index];
            if c.quant.is_none() {
                c.quant = Some(self.quant[c.tq].ok_or_else(|| malformed("missing table"))?);
            }
            c.dc_pred = 0;
            if (dc && ah == 0 && (td > 3 || self.dc[td].is_none()))
                || (!dc && (ta > 3 || self.ac[ta].is_none()))
            {
                return Err(malformed("missing Huffman table"));
            }
        }
        let mut bits = Bits::new(self.data, start);
        let restart = self.restart_interval;
        if dc {
            decode_dc_scan(frame, &members, &self.dc, ah, al, restart, &mut bits)?;
        } else {
            let (index, _, ta) = members[0];
            let table = self.ac[ta].as_ref().expect("checked above");
            let c = &mut frame.components[index];
            let band = Band { ss, se, al };
            if ah == 0 {
                decode_ac_first(c, table, band, restart, &mut bits)?;
            } else {
                decode_ac_refine(c, table, band, restart, &mut bits)?;
            }
        }
        Ok(bits.end())
    }
}

/// Counts MCUs to the restart markers of a scan.
struct Restarts {
    interval: usize,
    todo: usize,
}

impl Restarts {
    fn new(interval: usize) -> Self {
        Self {
            interval,
            todo: interval,
        }
    }

    /// Before each MCU: true when a restart marker was crossed (predictions and end-of-
    /// band runs start afresh).
    #[inline]
    fn next(&mut self, bits: &mut Bits<'_>) -> Result<bool, ThumbnailError> {
        if self.interval == 0 {
            return Ok(false);
        }
        let crossed = self.todo == 0;
        if crossed {
            bits.restart()?;
            self.todo = self.interval;
        }
        self.todo -= 1;
        Ok(crossed)
    }
}

/// The coefficients a scan carries.
#[derive(Clone, Copy)]
struct Band {
    ss: usize,
    se: usize,
    al: u32,
}

/// Bits `from..=to` (zig-zag indices) set.
#[inline]
fn span(from: usize, to: usize) -> u64 {
    if from > to {
        return 0;
    }
    let high = if to >= 63 {
        u64::MAX
    } else {
        (1u64 << (to + 1)) - 1
    };
    high & !((1u64 << from) - 1)
}

fn decode_dc_scan(
    frame: &mut Frame,
    members: &[(usize, usize, usize)],
    tables: &[Option<Huffman>; 4],
    ah: u32,
    al: u32,
    restart: usize,
    bits: &mut Bits<'_>,
) -> Result<(), ThumbnailError> {
    let single = members.len() == 1;
    let (units_x, units_y) = if single {
        let c = &frame.components[members[0].0];
        (c.bw, c.bh)
    } else {
        (frame.mcux, frame.mcuy)
    };
    let mut restarts = Restarts::new(restart);
    for my in 0..units_y {
        for mx in 0..units_x {
            if restarts.next(bits)? {
                for &(index, _, _) in members {
                    frame.components[index].dc_pred = 0;
                }
            }
            for &(index, td, _) in members {
                let c = &mut frame.components[index];
                let (h, v) = if single { (1, 1) } else { (c.h, c.v) };
                for by in 0..v {
                    for bx in 0..h {
                        let block = (my * v + by) * c.pbw + mx * h + bx;
                        let slots = c.slots();
                        let coef = &mut c.coefs[block * slots];
                        if ah == 0 {
                            let table = tables[td].as_ref().expect("checked by scan");
                            let s = bits.decode(table)?;
                            c.dc_pred = c.dc_pred.wrapping_add(bits.receive_extend(s)?);
                            *coef = (c.dc_pred.wrapping_shl(al)) as i16;
                        } else if bits.get(1)? == 1 {
                            *coef |= 1 << al;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn decode_ac_first(
    c: &mut Component,
    table: &Huffman,
    band: Band,
    restart: usize,
    bits: &mut Bits<'_>,
) -> Result<(), ThumbnailError> {
    let slots = c.slots();
    let mut eobrun = 0u32;
    let mut restarts = Restarts::new(restart);
    for by in 0..c.bh {
        for bx in 0..c.bw {
            if restarts.next(bits)? {
                eobrun = 0;
            }
            if eobrun > 0 {
                eobrun -= 1;
                continue;
            }
            let block = by * c.pbw + bx;
            let mut k = band.ss;
            while k <= band.se {
                let rs = bits.decode(table)?;
                let (r, s) = (usize::from(rs >> 4), rs & 15);
                if s == 0 {
                    if r < 15 {
                        eobrun = (1 << r) - 1;
                        if r > 0 {
                            eobrun += bits.get(r as u32)?;
                        }
                        break;
                    }
                    k += 16;
                    continue;
                }
                k += r;
                if k > band.se {
                    return Err(malformed("coefficient past the band"));
                }
                let slot = c.slot[k];
                if slot == u8::MAX {
                    bits.get(u32::from(s))?;
                } else {
                    let v = bits.receive_extend(s)?;
                    c.coefs[block * slots + usize::from(slot)] = v.wrapping_shl(band.al) as i16;
                }
                c.nonzero[block] |= 1 << k;
                k += 1;
            }
        }
    }
    Ok(())
}

/// Read the correction bits of the `n` nonzero-history coefficients in `mask` (in
/// zig-zag order) and apply those of kept coefficients.
#[inline(always)]
fn correct(
    coefs: &mut [i16],
    slot: &[u8; 64],
    kept: u64,
    mask: u64,
    n: u32,
    p1: i32,
    bits: &mut Bits<'_>,
) -> Result<(), ThumbnailError> {
    let mut kept = mask & kept;
    if kept == 0 {
        return bits.skip(n);
    }
    let read = bits.get_wide(n)?;
    if read == 0 {
        return Ok(());
    }
    while kept != 0 {
        let k = kept.trailing_zeros() as usize;
        kept &= kept - 1;
        // Its bit's place among the `n` read: after those of lower indices.
        let place = (mask & ((1u64 << k) - 1)).count_ones();
        if (read >> (n - 1 - place)) & 1 == 1 {
            let coef = &mut coefs[usize::from(slot[k])];
            let v = i32::from(*coef);
            if v & p1 == 0 {
                *coef = (if v >= 0 { v + p1 } else { v - p1 }) as i16;
            }
        }
    }
    Ok(())
}

/// The `r`-th (from 0) set bit of a mask, as a mask of that bit alone (0 if there are
/// fewer).
trait Select: Copy {
    fn nth(self, mask: u64, r: u32) -> u64;
}

/// Broadword selection (after Vigna, "Broadword implementation of rank/select
/// queries"): count the set bits per byte, find the byte that holds the bit, then look it
/// up in a table. Branch-free, where a loop of `r` steps mispredicts its exit.
#[derive(Clone, Copy)]
struct Portable;

const ONES: u64 = 0x0101_0101_0101_0101;

/// `[byte][r]`: the place of the `r`-th set bit of `byte` (8: none).
static SELECT_IN_BYTE: [[u8; 8]; 256] = {
    let mut table = [[8u8; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let (mut bit, mut found) = (0, 0);
        while bit < 8 {
            if byte & (1 << bit) != 0 {
                table[byte][found] = bit as u8;
                found += 1;
            }
            bit += 1;
        }
        byte += 1;
    }
    table
};

impl Select for Portable {
    #[inline(always)]
    fn nth(self, mask: u64, r: u32) -> u64 {
        // Set bits per byte, then running totals: byte i holds the count in bytes 0..=i.
        let mut counts = mask - ((mask >> 1) & 0x5555_5555_5555_5555);
        counts = (counts & 0x3333_3333_3333_3333) + ((counts >> 2) & 0x3333_3333_3333_3333);
        counts = (counts + (counts >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        let totals = counts.wrapping_mul(ONES);
        if (totals >> 56) as u32 <= r {
            return 0;
        }
        // The bytes whose running total is at most r come before the one holding the
        // bit: their high bits are set (totals <= 64 < 0x80, so no borrows cross bytes).
        let highs = ONES << 7;
        let before = (((u64::from(r) * ONES) | highs) - totals) & highs;
        let place = (64 - before.leading_zeros()) & !7;
        let rank = r - (((totals << 8) >> place) & 0xFF) as u32;
        let bit = SELECT_IN_BYTE[((mask >> place) & 0xFF) as usize][rank as usize & 7];
        1 << (place + u32::from(bit))
    }
}

/// BMI2's bit deposit does [`Select::nth`] in one instruction. A value exists only where
/// the CPU has BMI2 and implements it in hardware: AMD before Zen 3 microcodes it, at
/// tens of cycles.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Bmi2(());

#[cfg(target_arch = "x86_64")]
impl Bmi2 {
    /// Asked once a process: CPUID is slow under a hypervisor, which traps it.
    fn detect() -> Option<Self> {
        static FOUND: std::sync::OnceLock<Option<Bmi2>> = std::sync::OnceLock::new();
        *FOUND.get_or_init(Self::ask)
    }

    fn ask() -> Option<Self> {
        use std::arch::x86_64::__cpuid;
        if !std::arch::is_x86_feature_detected!("bmi2") {
            return None;
        }
        let vendor = __cpuid(0);
        let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6E65, 0x444D_4163);
        // Families before 0x19 (Zen 3), counted as base 0xF plus extended.
        let family = (__cpuid(1).eax >> 8) & 0xF;
        let extended = (__cpuid(1).eax >> 20) & 0xFF;
        let slow = amd && family == 0xF && extended < 0xA;
        (!slow).then_some(Self(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl Select for Bmi2 {
    #[inline(always)]
    fn nth(self, mask: u64, r: u32) -> u64 {
        // SAFETY: a `Bmi2` is only made by `detect`, on a CPU with BMI2.
        unsafe { std::arch::x86_64::_pdep_u64(1u64 << r, mask) }
    }
}

fn decode_ac_refine(
    c: &mut Component,
    table: &Huffman,
    band: Band,
    restart: usize,
    bits: &mut Bits<'_>,
) -> Result<(), ThumbnailError> {
    #[cfg(target_arch = "x86_64")]
    if let Some(bmi2) = Bmi2::detect() {
        // SAFETY: `detect` found BMI2 on this CPU.
        return unsafe { decode_ac_refine_bmi2(c, table, band, restart, bits, bmi2) };
    }
    refine(c, table, band, restart, bits, Portable)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi1,bmi2,popcnt")]
fn decode_ac_refine_bmi2(
    c: &mut Component,
    table: &Huffman,
    band: Band,
    restart: usize,
    bits: &mut Bits<'_>,
    bmi2: Bmi2,
) -> Result<(), ThumbnailError> {
    refine(c, table, band, restart, bits, bmi2)
}

#[inline(always)]
fn refine<S: Select>(
    c: &mut Component,
    table: &Huffman,
    band: Band,
    restart: usize,
    bits: &mut Bits<'_>,
    select: S,
) -> Result<(), ThumbnailError> {
    let slots = c.slots();
    let p1 = 1i32 << band.al;
    let band_mask = span(band.ss, band.se);
    let kept = c.kept & band_mask;
    let (slot, coefs, nonzeros) = (&c.slot, &mut c.coefs[..], &mut c.nonzero[..]);
    let mut eobrun = 0u32;
    let mut restarts = Restarts::new(restart);
    for by in 0..c.bh {
        for bx in 0..c.bw {
            if restarts.next(bits)? {
                eobrun = 0;
            }
            let block = by * c.pbw + bx;
            let coefs = &mut coefs[block * slots..(block + 1) * slots];
            let mut nonzero = nonzeros[block];
            // The band from the next coefficient on.
            let mut rest = band_mask;
            if eobrun == 0 {
                while rest != 0 {
                    let rs = bits.decode(table)?;
                    let (r, s) = (u32::from(rs >> 4), rs & 15);
                    let mut value = 0;
                    if s != 0 {
                        value = if bits.get(1)? == 1 { p1 } else { -p1 };
                    } else if r != 15 {
                        eobrun = 1 << r;
                        if r > 0 {
                            eobrun += bits.get(r)?;
                        }
                        break;
                    }
                    // Skip r zero-history coefficients; stop at the next one.
                    let stop = select.nth(!nonzero & rest, r);
                    if stop == 0 {
                        // The run goes past the band: correct the rest of it.
                        let passed = nonzero & rest;
                        correct(coefs, slot, kept, passed, passed.count_ones(), p1, bits)?;
                        if s != 0 {
                            return Err(malformed("coefficient past the band"));
                        }
                        rest = 0;
                        break;
                    }
                    // Between the next coefficient and `stop`, all but the r skipped
                    // have history.
                    let at = stop.trailing_zeros();
                    let passed = nonzero & rest & (stop - 1);
                    let n = at - rest.trailing_zeros() - r;
                    correct(coefs, slot, kept, passed, n, p1, bits)?;
                    if s != 0 {
                        let index = slot[at as usize];
                        if index != u8::MAX {
                            coefs[usize::from(index)] = value as i16;
                        }
                        nonzero |= stop;
                    }
                    // Past `stop` (the wrap at bit 63 leaves nothing).
                    rest &= !(stop << 1).wrapping_sub(1);
                }
            }
            if eobrun > 0 {
                let passed = nonzero & rest;
                correct(coefs, slot, kept, passed, passed.count_ones(), p1, bits)?;
                eobrun -= 1;
            }
            nonzeros[block] = nonzero;
        }
    }
    Ok(())
}

/// 1-D scaled IDCT weights: `n` outputs from the first `n` of 8 DCT coefficients,
/// sampling the 8-point basis at the centres of `n` equal cells. Half of C(u) folded in
/// (so the 2-D product carries T.81's 1/4).
fn weights(n: usize) -> Vec<f32> {
    let mut w = vec![0f32; n * n];
    for u in 0..n {
        let cu = if u == 0 {
            std::f32::consts::FRAC_1_SQRT_2
        } else {
            1.0
        };
        for x in 0..n {
            let angle = ((2 * x + 1) * u) as f32 * std::f32::consts::PI / (2 * n) as f32;
            w[u * n + x] = cu * angle.cos() / 2.0;
        }
    }
    w
}

/// Rounded to the nearest 8-bit sample (`f32::round` is a libm call; the clamp makes
/// the truncating cast of negative values harmless).
#[inline(always)]
fn to_sample(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

/// The component's plane at its scaled size (`pbw * kh` x `pbh * kv`).
fn idct_plane(c: &Component) -> Vec<u8> {
    let (kh, kv, slots) = (c.kh, c.kv, c.slots());
    let (wx, wy) = (weights(kh), weights(kv));
    let quant = c.quant.unwrap_or([0; 64]);
    // Slot -> (row, column, quantiser).
    let mut layout = vec![(0usize, 0usize, 0f32); slots];
    for (zz, &slot) in c.slot.iter().enumerate() {
        if slot != u8::MAX {
            let nat = usize::from(NATURAL[zz]);
            layout[usize::from(slot)] = (nat / 8, nat % 8, f32::from(quant[zz]));
        }
    }
    let stride = c.pbw * kh;
    let mut plane = vec![0u8; stride * c.pbh * kv];
    let mut f = vec![0f32; 64];
    let mut rows = vec![0f32; kv * kh];
    for by in 0..c.pbh {
        for bx in 0..c.pbw {
            let block = by * c.pbw + bx;
            let coefs = &c.coefs[block * slots..(block + 1) * slots];
            f[..kv * 8].fill(0.0);
            for (&q, &(row, col, scale)) in coefs.iter().zip(&layout) {
                f[row * 8 + col] = f32::from(q) * scale;
            }
            // Columns first: rows[v][x] = sum_u f[v][u] wx[u][x].
            for v in 0..kv {
                for x in 0..kh {
                    let mut sum = 0.0;
                    for u in 0..kh {
                        sum += f[v * 8 + u] * wx[u * kh + x];
                    }
                    rows[v * kh + x] = sum;
                }
            }
            for y in 0..kv {
                let out = (by * kv + y) * stride + bx * kh;
                for x in 0..kh {
                    let mut sum = 128.0;
                    for v in 0..kv {
                        sum += rows[v * kh + x] * wy[v * kv + y];
                    }
                    plane[out + x] = to_sample(sum);
                }
            }
        }
    }
    plane
}

/// Decode a progressive JPEG at `scale`/8 (1..=8) of its size: `ceil(w * scale / 8)` x
/// `ceil(h * scale / 8)`, grey or RGB. `Ok(None)`: not a file this decoder handles.
pub fn decode_scaled(data: &[u8], scale: u32) -> Result<Option<DynamicImage>, ThumbnailError> {
    let scale = scale.clamp(1, 8) as usize;
    let mut d = Decoder::new(data, scale);
    if data.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err(malformed("not a JPEG"));
    }
    let mut at = 2;
    let mut scans = 0;
    while let Some(start) = d.next_scan(at)? {
        match start {
            Start::Unsupported => return Ok(None),
            Start::Scan(sos) => {
                if scans == 0 {
                    for c in &mut d.frame.as_mut().expect("checked by next_scan").components {
                        let blocks = c.pbw * c.pbh;
                        c.coefs = vec![0; blocks * c.slots()];
                        c.nonzero = vec![0; blocks];
                    }
                }
                at = d.scan(sos)?;
                scans += 1;
            }
        }
    }
    let Some(frame) = d.frame.take() else {
        return Ok(None);
    };
    if scans == 0 {
        return Err(malformed("no scans"));
    }
    let (width, height) = (
        (frame.width * scale).div_ceil(8),
        (frame.height * scale).div_ceil(8),
    );
    let planes: Vec<(Vec<u8>, usize)> = frame
        .components
        .iter()
        .map(|c| (idct_plane(c), c.pbw * c.kh))
        .collect();
    if planes.len() == 1 {
        let (plane, stride) = &planes[0];
        let mut out = Vec::with_capacity(width * height);
        for y in 0..height {
            out.extend_from_slice(&plane[y * stride..y * stride + width]);
        }
        return Ok(GrayImage::from_raw(width as u32, height as u32, out).map(DynamicImage::from));
    }
    let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
    let rgb = match d.adobe_transform {
        Some(t) => t == 0,
        None => ids == b"RGB",
    };
    let mut out = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let row = |i: usize| {
            let (plane, stride) = &planes[i];
            &plane[y * stride..y * stride + width]
        };
        for ((&a, &b), &c) in row(0).iter().zip(row(1)).zip(row(2)) {
            if rgb {
                out.extend_from_slice(&[a, b, c]);
            } else {
                let (yy, cb, cr) = (f32::from(a), f32::from(b) - 128.0, f32::from(c) - 128.0);
                out.extend_from_slice(&[
                    to_sample(yy + 1.402 * cr),
                    to_sample(yy - 0.344_136 * cb - 0.714_136 * cr),
                    to_sample(yy + 1.772 * cb),
                ]);
            }
        }
    }
    Ok(RgbImage::from_raw(width as u32, height as u32, out).map(DynamicImage::from))
}

/// Bytes of coefficient storage `decode_scaled` allocates for this file at `scale`,
/// from the headers alone; None where it would not decode it.
pub fn coefficient_bytes(data: &[u8], scale: u32) -> Option<u64> {
    let mut d = Decoder::new(data, scale.clamp(1, 8) as usize);
    // The frame header comes before the first scan.
    let Start::Scan(_) = d.next_scan(2).ok()?? else {
        return None;
    };
    let frame = d.frame.as_ref()?;
    Some(
        frame
            .components
            .iter()
            .map(|c| (c.pbw * c.pbh * (c.slots() * 2 + 8)) as u64)
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A photo-like picture: gradients, noise and hard edges.
    fn picture(w: usize, h: usize) -> Vec<u8> {
        let mut x32 = 0x9E37_79B9u32;
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                x32 ^= x32 << 13;
                x32 ^= x32 >> 17;
                x32 ^= x32 << 5;
                let edge = if (x / 7 + y / 5) % 3 == 0 { 60 } else { 0 };
                let noise = (x32 & 31) as usize;
                out.extend_from_slice(&[
                    ((x * 255 / w.max(1)) + noise + edge).min(255) as u8,
                    ((y * 255 / h.max(1)) + edge) as u8 / 2,
                    (((x + y) * 3 + noise) % 256) as u8,
                ]);
            }
        }
        out
    }

    /// A progressive JPEG from libjpeg's compressor (successive approximation, so
    /// refinement scans), at `quality`, with chroma blocks of `chroma` pixels.
    fn progressive(
        w: usize,
        h: usize,
        grey: bool,
        quality: f32,
        chroma: (u8, u8),
        restart: u16,
        optimize_scans: bool,
    ) -> Vec<u8> {
        if restart > 0 {
            // libjpeg's wrapper cannot set restarts; jpeg-encoder can (spectral
            // selection only, no refinement).
            let mut out = Vec::new();
            let mut enc = jpeg_encoder::Encoder::new(&mut out, quality as u8);
            enc.set_progressive(true);
            enc.set_restart_interval(restart);
            enc.set_sampling_factor(match chroma {
                (2, 2) => jpeg_encoder::SamplingFactor::F_2_2,
                (2, 1) => jpeg_encoder::SamplingFactor::F_2_1,
                _ => jpeg_encoder::SamplingFactor::F_1_1,
            });
            let color = if grey {
                jpeg_encoder::ColorType::Luma
            } else {
                jpeg_encoder::ColorType::Rgb
            };
            let pixels = picture(w, h);
            let pixels: Vec<u8> = if grey {
                pixels.chunks(3).map(|p| p[0]).collect()
            } else {
                pixels
            };
            enc.encode(&pixels, w as u16, h as u16, color).unwrap();
            return out;
        }
        let space = if grey {
            mozjpeg::ColorSpace::JCS_GRAYSCALE
        } else {
            mozjpeg::ColorSpace::JCS_RGB
        };
        let mut c = mozjpeg::Compress::new(space);
        c.set_size(w, h);
        c.set_quality(quality);
        if !grey {
            c.set_chroma_sampling_pixel_sizes(chroma, chroma);
        }
        c.set_optimize_scans(optimize_scans);
        c.set_progressive_mode();
        let mut c = c.start_compress(Vec::new()).unwrap();
        let pixels = picture(w, h);
        let pixels: Vec<u8> = if grey {
            pixels.chunks(3).map(|p| p[0]).collect()
        } else {
            pixels
        };
        c.write_scanlines(&pixels).unwrap();
        c.finish().unwrap()
    }

    /// Mean absolute difference from the source picture resized to the decoded size
    /// (a reference that favours neither IDCT).
    fn error_from_source(img: &DynamicImage, source: &[u8], w: usize, h: usize) -> f64 {
        let source = RgbImage::from_raw(w as u32, h as u32, source.to_vec()).unwrap();
        let rgb = image::imageops::resize(
            &source,
            img.width(),
            img.height(),
            image::imageops::FilterType::Triangle,
        );
        let reference = if img.color().channel_count() == 1 {
            // Grey pictures are the source's first channel.
            DynamicImage::from(GrayImage::from_fn(img.width(), img.height(), |x, y| {
                image::Luma([rgb.get_pixel(x, y).0[0]])
            }))
        } else {
            DynamicImage::from(rgb)
        };
        let pairs = img.as_bytes().iter().zip(reference.as_bytes());
        pairs.map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / img.as_bytes().len() as f64
    }

    #[test]
    fn matches_libjpeg_at_every_scale_and_sampling() {
        let cases = [
            // (w, h, grey, quality, chroma, restart, optimize)
            (1000, 664, false, 90.0, (2, 2), 0, false),
            (640, 480, false, 75.0, (2, 1), 0, true),
            (336, 520, false, 100.0, (1, 1), 0, false),
            (256, 128, true, 85.0, (1, 1), 0, false),
            (496, 304, false, 50.0, (2, 2), 3, false),
            (304, 200, true, 80.0, (1, 1), 5, false),
            (17, 33, false, 90.0, (2, 2), 0, false),
            (7, 9, true, 90.0, (1, 1), 0, false),
            (1, 1, false, 90.0, (2, 2), 0, false),
        ];
        for (w, h, grey, q, chroma, restart, opt) in cases {
            let data = progressive(w, h, grey, q, chroma, restart, opt);
            let source = picture(w, h);
            let mut decoded = 0;
            for scale in 1..=8 {
                let case = format!("{w}x{h} grey={grey} q={q} {chroma:?} rst={restart} {scale}/8");
                let Some(ours) = decode_scaled(&data, scale).unwrap() else {
                    continue;
                };
                decoded += 1;
                let theirs = super::super::jpeg::decode_scaled(&data, scale)
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    (ours.width(), ours.height(), ours.color()),
                    (theirs.width(), theirs.height(), theirs.color()),
                    "{case}"
                );
                let diffs = ours.as_bytes().iter().zip(theirs.as_bytes());
                let diffs = diffs.map(|(a, b)| a.abs_diff(*b));
                let max = diffs.clone().max().unwrap_or(0);
                let mean = diffs.map(f64::from).sum::<f64>() / ours.as_bytes().len() as f64;
                // libjpeg-turbo computes the same IDCT except at 2/8 and 4/8 (its older
                // kernels use more coefficients), and upsamples subsampled chroma where
                // this decoder transforms it at the output size.
                if (chroma == (1, 1) || grey) && scale != 2 && scale != 4 {
                    assert!(mean <= 0.1 && max <= 3, "{case}: {mean} {max}");
                } else if ours.width() >= 16 && ours.height() >= 16 {
                    // Elsewhere: as close to the picture as libjpeg is.
                    let (e_ours, e_theirs) = (
                        error_from_source(&ours, &source, w, h),
                        error_from_source(&theirs, &source, w, h),
                    );
                    assert!(
                        e_ours <= e_theirs * 1.2 + 2.5,
                        "{case}: {e_ours} vs {e_theirs}"
                    );
                }
            }
            // Scales 1..=4 never need upsampling, whatever the sampling.
            assert!(decoded >= 4, "{w}x{h} {chroma:?}: only {decoded} scales");
        }
    }

    #[test]
    fn baseline_files_are_left_to_libjpeg() {
        let mut data = Vec::new();
        jpeg_encoder::Encoder::new(&mut data, 90)
            .encode(&picture(64, 48), 64, 48, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        assert!(decode_scaled(&data, 2).unwrap().is_none());
        assert!(coefficient_bytes(&data, 2).is_none());
    }

    #[test]
    fn broadword_selection_finds_the_nth_set_bit() {
        let naive = |mask: u64, r: u32| {
            let mut m = mask;
            for _ in 0..r {
                m &= m.wrapping_sub(1);
            }
            m & m.wrapping_neg()
        };
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut masks = vec![0, u64::MAX, 1, 1 << 63, 0x8000_0000_0000_0001];
        for _ in 0..20_000 {
            // xorshift; AND/OR mixes give sparse and dense masks.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = state.rotate_left(17);
            masks.extend([state, state & x, state | x, state & x & x.rotate_left(9)]);
        }
        #[cfg(target_arch = "x86_64")]
        let bmi2 = Bmi2::detect();
        for mask in masks {
            for r in 0..64 {
                assert_eq!(Portable.nth(mask, r), naive(mask, r), "{mask:#x} {r}");
                #[cfg(target_arch = "x86_64")]
                if let Some(bmi2) = bmi2 {
                    assert_eq!(bmi2.nth(mask, r), naive(mask, r), "{mask:#x} {r}");
                }
            }
        }
    }

    #[test]
    fn keeps_only_the_coefficients_the_scale_needs() {
        let data = progressive(1600, 1200, false, 90.0, (2, 2), 0, false);
        // 4:2:0 at 1/4: luma keeps 2x2 coefficients a block, chroma 4x4.
        let luma = 200 * 150 * (4 * 2 + 8);
        let chroma = 2 * 100 * 75 * (16 * 2 + 8);
        assert_eq!(coefficient_bytes(&data, 2), Some(luma + chroma));
        // libjpeg keeps 128 bytes a block.
        assert!(luma + chroma < (200 * 150 + 2 * 100 * 75) * 128 / 5);
    }

    #[test]
    fn truncated_and_damaged_files_are_errors_not_panics() {
        let data = progressive(48, 40, false, 90.0, (2, 2), 2, false);
        for len in 0..data.len() - 2 {
            assert!(
                !matches!(decode_scaled(&data[..len], 2), Ok(Some(_))),
                "a picture from {len} of {} bytes",
                data.len()
            );
        }
        // Flipped bytes may decode to something or fail, but never panic.
        let mut x = 12345u32;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut damaged = data.clone();
            let at = x as usize % damaged.len();
            damaged[at] ^= (x >> 8) as u8 | 1;
            let _ = decode_scaled(&damaged, 1 + x % 8);
            let _ = coefficient_bytes(&damaged, 2);
        }
    }
}
