//! The service's memory budget: bytes of large-message buffers shared by all
//! connections. Each connection keeps up to `FREE_PER_CONNECTION_BYTES` of
//! buffers on its own; a message needing more (its read buffer, or its
//! inflated copy when compressed) first reserves the excess here, all at
//! once and in arrival order, waiting at most until its deadline. So the
//! service holds at most `max_connections` × the free share plus
//! `max_buffered_bytes`, however many clients send large messages at once.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

/// Buffer bytes a connection may hold without reserving.
pub const FREE_PER_CONNECTION_BYTES: usize = 256 << 10;
/// The budget counts in units of this many bytes.
const UNIT_BYTES: usize = 1 << 10;

/// The shared budget.
#[derive(Debug, Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total_units: u32,
}

/// The reservation could not be made before the deadline.
#[derive(Debug)]
pub struct OverBudget;

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT_BYTES)).unwrap_or(u32::MAX)
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Budget {
        let total_units = units(usize::try_from(bytes).unwrap_or(usize::MAX));
        Budget {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// A holder for one connection (or one message), holding nothing yet.
    pub fn holder(&self) -> Held {
        Held {
            budget: self.clone(),
            units: 0,
        }
    }
}

/// What one connection holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Budget,
    units: u32,
}

impl Held {
    /// Makes what is held cover buffers of `bytes` in all (beyond the free
    /// share), waiting until `deadline` at most. A need larger than the
    /// whole budget can never be met and fails at once.
    pub async fn cover(&mut self, bytes: usize, deadline: Instant) -> Result<(), OverBudget> {
        let wanted = units(bytes.saturating_sub(FREE_PER_CONNECTION_BYTES));
        if wanted <= self.units {
            return Ok(());
        }
        let more = wanted - self.units;
        if wanted > self.budget.total_units {
            return Err(OverBudget);
        }
        let acquire = self.budget.units.acquire_many(more);
        match tokio::time::timeout_at(deadline.into(), acquire).await {
            Ok(Ok(permit)) => {
                // Counted in `self.units` and given back by `release_to`.
                permit.forget();
                self.units = wanted;
                Ok(())
            }
            _ => Err(OverBudget),
        }
    }

    /// Gives back what buffers of `bytes` in all no longer need.
    pub fn release_to(&mut self, bytes: usize) {
        let keep = units(bytes.saturating_sub(FREE_PER_CONNECTION_BYTES)).min(self.units);
        self.budget.units.add_permits((self.units - keep) as usize);
        self.units = keep;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_wait_for_each_other_and_are_given_back() {
        let budget = Budget::new(4 << 20);
        let soon = || Instant::now() + Duration::from_millis(50);
        let mut a = budget.holder();
        a.cover(FREE_PER_CONNECTION_BYTES + (3 << 20), soon())
            .await
            .unwrap();
        let mut b = budget.holder();
        // Within the free share: nothing to reserve.
        b.cover(FREE_PER_CONNECTION_BYTES, soon()).await.unwrap();
        assert!(
            b.cover(FREE_PER_CONNECTION_BYTES + (2 << 20), soon())
                .await
                .is_err()
        );
        a.release_to(FREE_PER_CONNECTION_BYTES + (1 << 20));
        b.cover(FREE_PER_CONNECTION_BYTES + (2 << 20), soon())
            .await
            .unwrap();
        drop(a);
        drop(b);
        let mut c = budget.holder();
        c.cover(FREE_PER_CONNECTION_BYTES + (4 << 20), soon())
            .await
            .unwrap();
        // More than the whole budget fails at once.
        let mut d = budget.holder();
        assert!(
            d.cover(8 << 20, Instant::now() + Duration::from_secs(60))
                .await
                .is_err()
        );
    }
}
