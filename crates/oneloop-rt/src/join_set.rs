//! [`JoinSet`]: a group of tasks whose outputs are taken as they finish; dropping the set
//! aborts the tasks still running.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::executor::JoinHandle;

/// Tasks spawned together, awaited in the order they finish.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use oneloop_rt::{time::sleep, JoinSet};
///
/// let order = oneloop_rt::block_on(async {
///     let mut set = JoinSet::new();
///     for ms in [30u64, 10, 20] {
///         set.spawn(async move { sleep(Duration::from_millis(ms)).await; ms });
///     }
///     let mut order = Vec::new();
///     while let Some(ms) = set.join_next().await {
///         order.push(ms);
///     }
///     order
/// });
/// assert_eq!(order, [10, 20, 30]);
/// ```
pub struct JoinSet<T> {
    tasks: Vec<JoinHandle<T>>,
}

impl<T> Default for JoinSet<T> {
    fn default() -> Self {
        JoinSet { tasks: Vec::new() }
    }
}

impl<T: 'static> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        JoinSet::default()
    }

    /// Spawns `future` on this thread's executor (see [`spawn`](crate::spawn)) into the set.
    pub fn spawn<F>(&mut self, future: F)
    where
        F: Future<Output = T> + 'static,
    {
        self.tasks.push(crate::spawn(future));
    }

    /// How many tasks are in the set (running, or finished and not yet taken).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The output of the next task to finish; `None` when the set is empty.
    pub async fn join_next(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.tasks.is_empty() {
            return Poll::Ready(None);
        }
        for i in 0..self.tasks.len() {
            if let Poll::Ready(value) = Pin::new(&mut self.tasks[i]).poll(cx) {
                drop(self.tasks.swap_remove(i));
                return Poll::Ready(Some(value));
            }
        }
        Poll::Pending
    }

    /// Aborts every task in the set (their futures are dropped, cancelling their ops).
    pub fn abort_all(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}
