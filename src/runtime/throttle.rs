//! Rate-limited logging: a warning that a hostile or broken peer can trigger at will (a foreign
//! certificate, a flood of connections) is logged at most once per interval, with a count of
//! what was left out, so it can neither fill the disk nor go unseen.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Lets one event through per `interval` and counts the rest.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle letting one event through per `interval`.
    pub(crate) const fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if this event should be logged, `n` being how many were left out since the
    /// last one logged; `None` if it should not.
    pub(crate) fn allow(&self) -> Option<u64> {
        #[allow(clippy::disallowed_methods, reason = "the runtime reads the clock")]
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            state.suppressed += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_a_count_of_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        let open = LogThrottle::new(Duration::ZERO);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
    }
}
