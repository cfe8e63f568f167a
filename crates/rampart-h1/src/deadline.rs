//! A timer for deadlines that move with every request, kept and reused instead of made
//! anew: it is armed at or before the deadline that counts, so that a later deadline costs
//! no timer operation, and it is re-armed only when it fires early. Registering a new timer
//! and removing it again was a measurable part of each proxied request.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use tokio::time::{Instant, Sleep};

/// A reusable timer (see the module documentation).
#[derive(Debug)]
pub struct Deadline {
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    /// A timer armed for `at`.
    pub fn new(at: Instant) -> Self {
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Ready once `deadline` has passed; until then the task is woken when it does.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
        loop {
            ready!(self.timer.as_mut().poll(cx));
            // Armed for this very deadline, it has passed; armed earlier, it is moved on.
            if self.timer.deadline() == deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    /// The output of `future`, or `None` when `deadline` passes first.
    pub async fn until<F: Future>(&mut self, deadline: Instant, future: F) -> Option<F::Output> {
        let mut future = pin!(future);
        poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            self.poll_passed(cx, deadline).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_kept_and_an_earlier_one_taken() {
        let start = Instant::now();
        let mut timer = Deadline::new(start + Duration::from_secs(1));
        // Armed for 1 s, asked for 3 s: it fires at 1 s, is moved on, and ends at 3 s.
        let late = start + Duration::from_secs(3);
        assert_eq!(timer.until(late, std::future::pending::<()>()).await, None);
        assert_eq!(Instant::now(), late);
        // Armed for 3 s (passed), asked for 2 s more: 5 s.
        let next = late + Duration::from_secs(2);
        assert_eq!(timer.until(next, std::future::pending::<()>()).await, None);
        assert_eq!(Instant::now(), next);
        // An earlier deadline than the one armed is taken at once.
        let far = Instant::now() + Duration::from_secs(60);
        let near = Instant::now() + Duration::from_millis(10);
        let waited = timer.until(far, tokio::time::sleep_until(near)).await;
        assert_eq!(waited, Some(()));
        let sooner = Instant::now() + Duration::from_millis(5);
        assert_eq!(
            timer.until(sooner, std::future::pending::<()>()).await,
            None
        );
        assert_eq!(Instant::now(), sooner);
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_that_ends_first_gives_its_output() {
        let mut timer = Deadline::new(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(1);
        let quick = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            7
        };
        assert_eq!(timer.until(deadline, quick).await, Some(7));
    }
}
