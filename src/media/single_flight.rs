//! In-process single-flight: the first caller for a key does the work, later callers
//! for the same key wait until it is done and then look at its result themselves.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub struct Flights<K> {
    map: Arc<Mutex<HashMap<K, watch::Receiver<()>>>>,
}

impl<K> Default for Flights<K> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

pub enum Role<K: Hash + Eq + Clone> {
    /// Do the work; others wait until this guard is dropped.
    Leader(FlightGuard<K>),
    /// Someone else is doing it: wait with [`Follower::wait`].
    Follower(Follower),
}

pub struct Follower(watch::Receiver<()>);

impl Follower {
    /// Wait until the leader finished (or gave up).
    pub async fn wait(mut self) {
        // Err means the sender is gone, which is also "done".
        let _ = self.0.changed().await;
    }
}

pub struct FlightGuard<K: Hash + Eq + Clone> {
    key: K,
    map: Arc<Mutex<HashMap<K, watch::Receiver<()>>>>,
    done: watch::Sender<()>,
}

impl<K: Hash + Eq + Clone> Drop for FlightGuard<K> {
    fn drop(&mut self) {
        self.map.lock().expect("flight map lock").remove(&self.key);
        self.done.send_replace(());
    }
}

impl<K: Hash + Eq + Clone> Flights<K> {
    pub fn join(&self, key: K) -> Role<K> {
        let mut map = self.map.lock().expect("flight map lock");
        if let Some(rx) = map.get(&key) {
            return Role::Follower(Follower(rx.clone()));
        }
        let (done, rx) = watch::channel(());
        map.insert(key.clone(), rx);
        Role::Leader(FlightGuard {
            key,
            map: self.map.clone(),
            done,
        })
    }

    /// A follower handle if `key` is in flight right now.
    pub fn in_flight(&self, key: &K) -> Option<Follower> {
        self.map
            .lock()
            .expect("flight map lock")
            .get(key)
            .map(|rx| Follower(rx.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wait_for_the_leader() {
        let flights = Flights::default();
        let Role::Leader(guard) = flights.join(1) else {
            panic!("first is leader")
        };
        let Role::Follower(f) = flights.join(1) else {
            panic!("second follows")
        };
        assert!(
            matches!(flights.join(2), Role::Leader(_)),
            "other keys are independent"
        );
        let waiter = tokio::spawn(f.wait());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        waiter.await.unwrap();
        assert!(
            matches!(flights.join(1), Role::Leader(_)),
            "key is free again"
        );
        assert!(flights.in_flight(&1).is_none());
    }
}
