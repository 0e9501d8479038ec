//! The one ADS stream loop, shared by state-of-the-world and delta xDS.
//!
//! The loop reads requests and snapshot changes; per resource type it keeps a [`Subscription`]:
//! what the client wants, what it holds, and the response it has not answered yet. At most one
//! response per type is in flight: a newer snapshot waits for the ACK or NACK of the previous
//! one, so a burst of snapshots coalesces into the newest. Types are pushed in warming order
//! (CDS, EDS, LDS, RDS, ECDS). What differs between the two variants (how a request names
//! resources, what a response carries) sits behind [`Protocol`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::cache::SnapshotCache;
use super::{Resource, ResourceType, Snapshot, TypeResources};

/// One request, either variant, as the loop sees it.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// `node.id`, present at least on the stream's first request.
    pub node: Option<String>,
    /// The resource type asked about.
    pub type_url: String,
    /// The nonce of the response this request answers; empty on a first request.
    pub nonce: String,
    /// Envoy's `error_detail` message when it rejected that response.
    pub error: Option<String>,
    /// What the client wants from now on.
    pub interest: Interest,
}

/// How a request states the names it wants.
#[derive(Debug)]
pub(crate) enum Interest {
    /// State of the world: the full list of names wanted now (empty: everything, for CDS/LDS).
    Replace(Vec<String>),
    /// Delta: names added and removed, and resource versions the client already holds.
    Change {
        subscribe: Vec<String>,
        unsubscribe: Vec<String>,
        held: HashMap<String, String>,
    },
}

/// What the wire variant decides: how to read a request and what to answer.
pub(crate) trait Protocol {
    /// The request message.
    type Request: Send + 'static;
    /// The response message.
    type Response: Send + 'static;
    /// `sotw` or `delta`, for logs.
    const NAME: &'static str;
    /// The request in the loop's terms.
    fn incoming(request: Self::Request) -> Incoming;
    /// The response bringing `sub`'s client up to `resources`, if it needs one; records in
    /// `sub` what the client now holds.
    fn respond(
        sub: &mut Subscription,
        resources: &Arc<TypeResources>,
        nonce: &str,
    ) -> Option<Self::Response>;
}

/// A response sent and not yet answered.
#[derive(Debug)]
struct Pending {
    nonce: String,
    resources: Arc<TypeResources>,
}

/// One resource type on one stream.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// The type.
    pub kind: ResourceType,
    /// Whether the client wants every resource of the type.
    pub wildcard: bool,
    /// The names it wants besides (or instead of) the wildcard.
    pub names: BTreeSet<String>,
    /// Whether its interest changed since the last response.
    pub changed: bool,
    /// Whether a response was ever sent for this type.
    pub answered: bool,
    /// State of the world: the content last sent.
    pub sent: Option<Arc<TypeResources>>,
    /// Delta: the version of each resource the client holds.
    pub held: HashMap<String, String>,
    requested: bool,
    pending: Option<Pending>,
}

impl Subscription {
    fn new(kind: ResourceType) -> Subscription {
        Subscription {
            kind,
            wildcard: false,
            names: BTreeSet::new(),
            changed: false,
            answered: false,
            sent: None,
            held: HashMap::new(),
            requested: false,
            pending: None,
        }
    }

    /// The resources of `resources` this subscription wants, by name.
    pub fn wanted<'a>(
        &'a self,
        resources: &'a TypeResources,
    ) -> Box<dyn Iterator<Item = &'a Resource> + 'a> {
        if self.wildcard {
            Box::new(resources.items().values())
        } else {
            Box::new(self.names.iter().filter_map(|name| resources.get(name)))
        }
    }

    fn apply(&mut self, interest: Interest) {
        let first = !self.requested;
        self.requested = true;
        let (wildcard, names) = match interest {
            Interest::Replace(names) => {
                let wildcard = names.iter().any(|name| name == "*")
                    || (names.is_empty() && self.kind.wildcard_by_default());
                let names = names.into_iter().filter(|name| name != "*").collect();
                (wildcard, names)
            }
            Interest::Change {
                subscribe,
                unsubscribe,
                held,
            } => {
                // Legacy wildcard: a first request for CDS or LDS that names nothing.
                let mut wildcard = self.wildcard
                    || (first && subscribe.is_empty() && self.kind.wildcard_by_default());
                let mut names = self.names.clone();
                for name in subscribe {
                    if name == "*" {
                        wildcard = true;
                    } else {
                        names.insert(name);
                    }
                }
                for name in unsubscribe {
                    if name == "*" {
                        wildcard = false;
                    } else {
                        self.held.remove(&name);
                        names.remove(&name);
                    }
                }
                if !held.is_empty() {
                    self.held.extend(held);
                    self.changed = true;
                }
                (wildcard, names)
            }
        };
        if first || wildcard != self.wildcard || names != self.names {
            self.changed = true;
        }
        self.wildcard = wildcard;
        self.names = names;
    }
}

/// The per-stream state the loop keeps.
struct StreamState {
    node: String,
    cache: Arc<SnapshotCache>,
    subscriptions: BTreeMap<ResourceType, Subscription>,
    responses_sent: u64,
}

/// The receiving end of the stream went away.
struct Closed;

impl StreamState {
    fn receive(&mut self, incoming: Incoming, protocol: &str) {
        let Some(kind) = ResourceType::from_type_url(&incoming.type_url) else {
            tracing::debug!(node = %self.node, protocol, type_url = %incoming.type_url, "xds request for a type doppel does not serve");
            return;
        };
        let sub = self
            .subscriptions
            .entry(kind)
            .or_insert_with(|| Subscription::new(kind));
        if !incoming.nonce.is_empty()
            && let Some(pending) = sub.pending.take_if(|p| p.nonce == incoming.nonce)
        {
            let version = pending.resources.version();
            match &incoming.error {
                Some(error) => self.cache.record_nack(&self.node, kind, version, error),
                None => self
                    .cache
                    .record_ack(&self.node, kind, version, &pending.resources),
            }
        }
        // A request answering an older response (a stale nonce) is no ACK, but its interest holds.
        sub.apply(incoming.interest);
    }

    async fn flush<P: Protocol>(
        &mut self,
        snapshot: Option<&Snapshot>,
        out: &mpsc::Sender<Result<P::Response, Status>>,
    ) -> Result<(), Closed> {
        let Some(snapshot) = snapshot else {
            return Ok(());
        };
        for (kind, sub) in &mut self.subscriptions {
            if sub.pending.is_some() {
                continue;
            }
            let resources = snapshot.resources(*kind);
            let nonce = (self.responses_sent + 1).to_string();
            let Some(response) = P::respond(sub, resources, &nonce) else {
                continue;
            };
            self.responses_sent += 1;
            sub.changed = false;
            sub.answered = true;
            sub.pending = Some(Pending {
                nonce,
                resources: Arc::clone(resources),
            });
            self.cache
                .record_sent(&self.node, *kind, resources.version());
            tracing::debug!(node = %self.node, protocol = P::NAME, type_code = kind.code(), version = resources.version(), "xds response sent");
            out.send(Ok(response)).await.map_err(|_| Closed)?;
        }
        Ok(())
    }
}

/// Serves one ADS stream until the client goes away or `closing` turns true; then ends it
/// with `UNAVAILABLE` (Envoy keeps its config and reconnects).
pub(crate) async fn run<P: Protocol>(
    cache: Arc<SnapshotCache>,
    requests: impl Stream<Item = Result<P::Request, Status>> + Unpin,
    out: mpsc::Sender<Result<P::Response, Status>>,
    closing: watch::Receiver<bool>,
) {
    let farewell = out.clone();
    tokio::select! {
        () = serve_stream::<P>(cache, requests, out) => {}
        () = until_closing(closing) => {
            let status = Status::unavailable("doppel's xds server is shutting down");
            let _ = farewell.send(Err(status)).await;
        }
    }
}

/// Completes when `closing` turns true; never, if its sender is gone without that.
async fn until_closing(mut closing: watch::Receiver<bool>) {
    if closing.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn serve_stream<P: Protocol>(
    cache: Arc<SnapshotCache>,
    mut requests: impl Stream<Item = Result<P::Request, Status>> + Unpin,
    out: mpsc::Sender<Result<P::Response, Status>>,
) {
    let first = match requests.next().await {
        Some(Ok(request)) => P::incoming(request),
        Some(Err(status)) => {
            tracing::debug!(protocol = P::NAME, error = %status, "xds stream failed before its first request");
            return;
        }
        None => return,
    };
    let Some(node) = first.node.clone().filter(|id| !id.is_empty()) else {
        let refusal =
            Status::invalid_argument("the first request of an ADS stream must carry node.id");
        let _ = out.send(Err(refusal)).await;
        return;
    };
    tracing::info!(node = %node, protocol = P::NAME, "xds stream opened");
    let mut guard = cache.open_stream(&node);
    let mut state = StreamState {
        node,
        cache,
        subscriptions: BTreeMap::new(),
        responses_sent: 0,
    };
    state.receive(first, P::NAME);
    let mut snapshot = guard.snapshots.borrow_and_update().clone();
    loop {
        if state.flush::<P>(snapshot.as_deref(), &out).await.is_err() {
            break;
        }
        tokio::select! {
            request = requests.next() => match request {
                Some(Ok(request)) => state.receive(P::incoming(request), P::NAME),
                Some(Err(status)) => {
                    tracing::debug!(node = %state.node, protocol = P::NAME, error = %status, "xds stream failed");
                    break;
                }
                None => break,
            },
            changed = guard.snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                snapshot = guard.snapshots.borrow_and_update().clone();
            }
            () = out.closed() => break,
        }
    }
    tracing::info!(node = %state.node, protocol = P::NAME, "xds stream closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(subscribe: &[&str], unsubscribe: &[&str]) -> Interest {
        Interest::Change {
            subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
            unsubscribe: unsubscribe.iter().map(|s| (*s).to_owned()).collect(),
            held: HashMap::new(),
        }
    }

    #[test]
    fn empty_sotw_names_mean_everything_only_for_cds_and_lds() {
        let mut cds = Subscription::new(ResourceType::Cluster);
        cds.apply(Interest::Replace(Vec::new()));
        assert!(cds.wildcard && cds.changed);
        let mut rds = Subscription::new(ResourceType::Route);
        rds.apply(Interest::Replace(Vec::new()));
        assert!(!rds.wildcard);
        rds.apply(Interest::Replace(vec!["*".into(), "a".into()]));
        assert!(rds.wildcard);
        assert_eq!(rds.names.iter().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn an_unchanged_sotw_request_changes_nothing() {
        let mut eds = Subscription::new(ResourceType::Endpoint);
        eds.apply(Interest::Replace(vec!["a".into(), "b".into()]));
        eds.changed = false;
        eds.apply(Interest::Replace(vec!["b".into(), "a".into()]));
        assert!(!eds.changed, "same names in another order");
        eds.apply(Interest::Replace(vec!["a".into()]));
        assert!(eds.changed);
    }

    #[test]
    fn delta_legacy_wildcard_explicit_wildcard_and_unsubscribe() {
        let mut lds = Subscription::new(ResourceType::Listener);
        lds.apply(change(&[], &[]));
        assert!(lds.wildcard, "a first request naming nothing");
        lds.apply(change(&[], &["*"]));
        assert!(!lds.wildcard);

        let mut rds = Subscription::new(ResourceType::Route);
        rds.apply(change(&[], &[]));
        assert!(!rds.wildcard, "RDS is never a legacy wildcard");
        rds.apply(change(&["a", "b"], &[]));
        rds.held.insert("b".into(), "v1".into());
        rds.apply(change(&[], &["b"]));
        assert_eq!(rds.names.iter().collect::<Vec<_>>(), ["a"]);
        assert!(
            !rds.held.contains_key("b"),
            "an unsubscribed name is forgotten"
        );
        rds.apply(change(&["*"], &[]));
        assert!(rds.wildcard);
    }
}
