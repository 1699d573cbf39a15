//! [`Subscription`]: a feed of what a node reports from now on (events, member changes), and
//! the [`Lagged`] error of a subscriber that fell behind.

use tokio::sync::broadcast;

/// What a node reports from the moment of subscribing: [`Mesh::subscribe`] gives its
/// [`Event`]s, [`Mesh::watch_members`] its [`Member`] changes.
///
/// A subscriber more than 4,096 items behind misses the oldest and is told how many
/// ([`Lagged`]), then goes on with the oldest item still buffered. The feed ends (`None`) once the node has stopped, by
/// [`Mesh::shutdown`] or because every handle to it was dropped.
///
/// Nothing is replayed: for key changes that must not be missed use [`Mesh::watch`], which
/// reads the change log; for members, [`Mesh::members`] gives the current list.
///
/// # Example
///
/// ```no_run
/// # async fn example(mesh: confmesh::runtime::Mesh) {
/// let mut members = mesh.watch_members();
/// while let Some(change) = members.next().await {
///     match change {
///         Ok(member) => println!("{} is {:?}", member.name, member.state),
///         // Some changes were missed: read the whole list again.
///         Err(lagged) => println!("missed {} changes", lagged.missed),
///     }
/// }
/// # }
/// ```
///
/// [`Mesh::subscribe`]: super::Mesh::subscribe
/// [`Mesh::watch_members`]: super::Mesh::watch_members
/// [`Mesh::shutdown`]: super::Mesh::shutdown
/// [`Mesh::watch`]: super::Mesh::watch
/// [`Mesh::members`]: super::Mesh::members
/// [`Event`]: crate::proto::node::Event
/// [`Member`]: super::Member
#[derive(Debug)]
pub struct Subscription<T> {
    /// `None` when the node had already stopped at subscription.
    receiver: Option<broadcast::Receiver<T>>,
}

impl<T: Clone> Subscription<T> {
    /// A subscription to `sender`'s items, or an ended one if the node has stopped (the
    /// sender is gone).
    pub(crate) fn new(sender: &broadcast::WeakSender<T>) -> Subscription<T> {
        Subscription {
            receiver: sender.upgrade().map(|sender| sender.subscribe()),
        }
    }

    /// The next item, waiting for it if need be.
    ///
    /// Returns `Some(Err(Lagged))` once after the subscriber fell behind and items were
    /// dropped (the next call returns the oldest item still buffered), and `None` once the
    /// node has stopped and every buffered item was taken. Cancel-safe: dropping the future
    /// before it completes loses no item.
    pub async fn next(&mut self) -> Option<Result<T, Lagged>> {
        let receiver = self.receiver.as_mut()?;
        match receiver.recv().await {
            Ok(item) => Some(Ok(item)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Err(Lagged { missed })),
            Err(broadcast::error::RecvError::Closed) => {
                self.receiver = None;
                None
            }
        }
    }
}

/// A [`Subscription`] fell behind: `missed` items were dropped before it read them.
/// The subscription goes on with the oldest item still buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the subscriber fell behind and missed {missed} items")]
pub struct Lagged {
    /// How many items were dropped.
    pub missed: u64,
}
