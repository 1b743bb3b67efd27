//! What a router knows of the service it routes: its name, its methods and
//! which of them each instance serves.
//!
//! A router compiled for a service ([`Router`](crate::router::Router)) starts from the
//! generated [`ServiceDescriptor`]; a router that learns services from
//! registrations ([`DynamicRouter`](crate::router::DynamicRouter)) starts from the
//! first registration's `Hello.description`. Both then follow one rule for
//! every registration (see [`ServiceTable::admit`]):
//!
//! - a method the newcomer describes with the same path as a known method
//!   must have the same kind and oneof tag, and a new method must not take a
//!   known method's tag; otherwise the registration is refused with
//!   FAILED_PRECONDITION naming the first difference;
//! - methods the newcomer adds are learnt (a learning router only: a compiled
//!   router cannot route what it was not compiled for), and each method
//!   routes only to the instances that describe it;
//! - the known methods are the union of what registered since the service
//!   last had no instance: the first registration after that (re)defines the
//!   service, so a breaking change can be deployed by stopping every old
//!   instance first.
//!
//! A bridge that sends no description (built before descriptions existed) is
//! taken to serve every known method; a learning router refuses it while it
//! knows no method of the service.

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tonic::Status;

use crate::descriptor::{MethodKind, ServiceDescriptor, Strategy};
use crate::pb;
use crate::router::bridge_kind::BridgeKind;

/// One routed method, as the router holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Method {
    /// The proto name, for example `SayHello`.
    pub(crate) name: Box<str>,
    /// The full gRPC path, for example `/myservice.v1.Greeter/SayHello`.
    pub(crate) path: Box<str>,
    /// The field number in the `Call`/`Reply` oneofs.
    pub(crate) tag: u32,
    /// The streaming shape.
    pub(crate) kind: MethodKind,
    /// Field numbers from the request message to its routing key.
    pub(crate) route_key: Box<[u32]>,
    /// Whether it may be retried after reaching an instance.
    pub(crate) idempotent: bool,
    /// Its metrics, resolved at its first call.
    pub(crate) metrics: crate::metrics::MethodCell,
    /// Its calls under its concurrency limit.
    pub(crate) gate: crate::router::concurrency::Gate,
}

impl From<&crate::descriptor::MethodDescriptor> for Method {
    fn from(m: &crate::descriptor::MethodDescriptor) -> Self {
        Method {
            name: m.name.into(),
            path: m.path.into(),
            tag: m.tag,
            kind: m.kind,
            route_key: m.route_key.into(),
            idempotent: m.idempotent,
            metrics: Default::default(),
            gate: Default::default(),
        }
    }
}

/// The methods known at one moment; replaced whole when one is learnt.
#[derive(Debug, Default)]
pub(crate) struct Methods {
    list: Vec<Arc<Method>>,
    /// The encoded descriptor set that describes them (may be empty).
    pub(crate) file_descriptor_set: bytes::Bytes,
}

impl Methods {
    /// The method at `path`.
    pub(crate) fn by_path(&self, path: &str) -> Option<&Arc<Method>> {
        self.list.iter().find(|m| &*m.path == path)
    }

    /// Every known method, in the order they were learnt.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Method>> {
        self.list.iter()
    }

    /// Whether no method is known.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The methods one instance serves: `None` for every known method (a bridge
/// that described nothing), else their tags, sorted. Instances with the same
/// set share one allocation.
pub(crate) type Served = Option<Arc<[u32]>>;

/// What an admitted registration learnt about the service.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Learnt {
    /// Whether the registration (re)defined the service.
    pub(crate) defined: bool,
    /// Methods it added to the ones known.
    pub(crate) added: Vec<String>,
}

/// A routed service's name and methods.
#[derive(Debug)]
pub(crate) struct ServiceTable {
    name: Arc<str>,
    default_strategy: ArcSwap<Strategy>,
    /// Whether registrations may define and extend the methods.
    learns: bool,
    methods: ArcSwap<Methods>,
    /// Serialises admissions, so two registrations cannot both define the
    /// service; held across the registry insert.
    admitting: Mutex<Admissions>,
}

/// What admissions share.
#[derive(Debug, Default)]
struct Admissions {
    /// The latest instance's method set, shared with the next instance that
    /// serves the same methods.
    last_served: Option<Arc<[u32]>>,
    /// Set when a learning router dropped the (never defined) service: late
    /// registrations must start over.
    retired: bool,
}

impl ServiceTable {
    /// The table of a compiled service.
    pub(crate) fn compiled(
        descriptor: &ServiceDescriptor,
        file_descriptor_set: &'static [u8],
    ) -> Self {
        ServiceTable {
            name: descriptor.name.into(),
            default_strategy: ArcSwap::from_pointee(descriptor.default_strategy),
            learns: false,
            methods: ArcSwap::from_pointee(Methods {
                list: descriptor
                    .methods
                    .iter()
                    .map(|m| Arc::new(m.into()))
                    .collect(),
                file_descriptor_set: bytes::Bytes::from_static(file_descriptor_set),
            }),
            admitting: Mutex::new(Admissions::default()),
        }
    }

    /// The table of a service known by name only, whose methods its
    /// registrations describe.
    pub(crate) fn learning(name: &str) -> Self {
        ServiceTable {
            name: name.into(),
            default_strategy: ArcSwap::from_pointee(Strategy::default()),
            learns: true,
            methods: ArcSwap::from_pointee(Methods::default()),
            admitting: Mutex::new(Admissions::default()),
        }
    }

    /// The fully qualified service name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The service name, shared.
    pub(crate) fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }

    /// The strategy the service's description asks for.
    pub(crate) fn default_strategy(&self) -> Strategy {
        **self.default_strategy.load()
    }

    /// The methods known now.
    pub(crate) fn methods(&self) -> Arc<Methods> {
        self.methods.load_full()
    }

    /// Checks a registration's description against the known methods (the
    /// rule in the module docs) and learns what it adds. `live` says whether
    /// any instance is registered now; `insert` runs while admissions are
    /// held, so the registration is in the registry before the next one is
    /// checked. `sender` names the registering bridge's kind, for the
    /// refusal of a missing description.
    pub(crate) fn admit<T>(
        &self,
        description: Option<&pb::ServiceDescription>,
        sender: BridgeKind,
        live: impl FnOnce() -> bool,
        insert: impl FnOnce(Served) -> T,
    ) -> Result<(T, Learnt), Status> {
        let mut admissions = self.lock();
        if admissions.retired {
            return Err(Status::unavailable(format!(
                "`{}` was reset while this registration started; register again",
                self.name
            )));
        }
        let Some(description) = description else {
            if self.learns && self.methods.load().is_empty() {
                return Err(Status::failed_precondition(format!(
                    "the first registration of `{}` must describe the service \
                     (Hello.description); {}",
                    self.name,
                    sender.without_description()
                )));
            }
            return Ok((insert(None), Learnt::default()));
        };
        let described = parse(&self.name, description)?;
        let current = self.methods.load_full();
        let redefine = self.learns && (current.is_empty() || !live());
        let mut learnt = Learnt::default();
        if redefine {
            learnt.defined = true;
            if let Ok(strategy) = description.default_strategy.parse::<Strategy>() {
                self.default_strategy.store(Arc::new(strategy));
            }
            self.methods.store(Arc::new(Methods {
                list: described.iter().cloned().map(Arc::new).collect(),
                file_descriptor_set: description.file_descriptor_set.clone(),
            }));
        } else {
            check_compatible(&self.name, &current, &described)?;
            let added: Vec<&Method> = described
                .iter()
                .filter(|m| current.by_path(&m.path).is_none())
                .collect();
            if self.learns && !added.is_empty() {
                learnt.added = added.iter().map(|m| m.name.to_string()).collect();
                let mut list = current.list.clone();
                list.extend(added.into_iter().cloned().map(Arc::new));
                let file_descriptor_set = if description.file_descriptor_set.is_empty() {
                    current.file_descriptor_set.clone()
                } else {
                    description.file_descriptor_set.clone()
                };
                self.methods.store(Arc::new(Methods {
                    list,
                    file_descriptor_set,
                }));
            }
        }
        let mut tags: Vec<u32> = described.iter().map(|m| m.tag).collect();
        tags.sort_unstable();
        let served = match &admissions.last_served {
            Some(shared) if **shared == *tags => shared.clone(),
            _ => {
                let shared: Arc<[u32]> = tags.into();
                admissions.last_served = Some(shared.clone());
                shared
            }
        };
        Ok((insert(Some(served)), learnt))
    }

    /// Whether a registration ever described the methods.
    pub(crate) fn is_defined(&self) -> bool {
        !self.methods.load().is_empty()
    }

    /// Retires a learning service that no registration defined, when
    /// `unused()` holds, running `drop` while no admission can run; true if
    /// it did.
    pub(crate) fn retire_if(&self, unused: impl FnOnce() -> bool, drop: impl FnOnce()) -> bool {
        let mut admissions = self.lock();
        if self.is_defined() || !unused() {
            return false;
        }
        admissions.retired = true;
        drop();
        true
    }

    fn lock(&self) -> MutexGuard<'_, Admissions> {
        self.admitting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an instance serving `served` takes calls of the method `tag`.
pub(crate) fn serves(served: &Served, tag: u32) -> bool {
    served
        .as_ref()
        .is_none_or(|tags| tags.binary_search(&tag).is_ok())
}

/// Reads and validates a description's methods.
fn parse(service: &str, description: &pb::ServiceDescription) -> Result<Vec<Method>, Status> {
    let refuse = |what: String| {
        Err(Status::invalid_argument(format!(
            "the registration's description of `{service}` is invalid: {what}"
        )))
    };
    if description.name != service {
        return refuse(format!("it describes `{}`", description.name));
    }
    let mut methods: Vec<Method> = Vec::with_capacity(description.methods.len());
    for m in &description.methods {
        let expected = format!("/{service}/{}", m.name);
        if m.name.is_empty() || m.path != expected {
            return refuse(format!(
                "method `{}` has path `{}`, expected `{expected}`",
                m.name, m.path
            ));
        }
        let Some(kind) = MethodKind::from_wire(m.kind) else {
            return refuse(format!(
                "method `{}` has no valid kind ({})",
                m.name, m.kind
            ));
        };
        if m.tag == 0 {
            return refuse(format!("method `{}` has tag 0", m.name));
        }
        if let Some(other) = methods
            .iter()
            .find(|o| o.tag == m.tag || *o.name == *m.name)
        {
            return refuse(format!(
                "methods `{}` and `{}` share a name or the tag {}",
                other.name, m.name, m.tag
            ));
        }
        methods.push(Method {
            name: m.name.as_str().into(),
            path: m.path.as_str().into(),
            tag: m.tag,
            kind,
            route_key: m.route_key.as_slice().into(),
            idempotent: m.idempotent,
            metrics: Default::default(),
            gate: Default::default(),
        });
    }
    Ok(methods)
}

/// The first difference between the known methods and a newcomer's, as a
/// FAILED_PRECONDITION refusal.
fn check_compatible(service: &str, known: &Methods, described: &[Method]) -> Result<(), Status> {
    let refuse = |difference: String| {
        Err(Status::failed_precondition(format!(
            "registration refused: its `{service}` is incompatible with the registered \
             instances: {difference}"
        )))
    };
    for m in described {
        match known.by_path(&m.path) {
            Some(k) if k.kind != m.kind => {
                return refuse(format!(
                    "method `{}` is {} here but {} in the registered instances",
                    m.name,
                    m.kind.describe(),
                    k.kind.describe()
                ));
            }
            Some(k) if k.tag != m.tag => {
                return refuse(format!(
                    "method `{}` has tag {} here but {} in the registered instances",
                    m.name, m.tag, k.tag
                ));
            }
            Some(_) => {}
            None => {
                if let Some(k) = known.iter().find(|k| k.tag == m.tag) {
                    return refuse(format!(
                        "new method `{}` takes tag {}, which is `{}`'s in the registered instances",
                        m.name, m.tag, k.name
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(name: &str, tag: u32, kind: MethodKind) -> pb::MethodDescription {
        pb::MethodDescription {
            name: name.to_owned(),
            path: format!("/pkg.Svc/{name}"),
            tag,
            kind: kind.wire() as i32,
            route_key: Vec::new(),
            idempotent: false,
        }
    }

    fn description(methods: Vec<pb::MethodDescription>) -> pb::ServiceDescription {
        pb::ServiceDescription {
            name: "pkg.Svc".to_owned(),
            methods,
            default_strategy: "round-robin".to_owned(),
            file_descriptor_set: bytes::Bytes::new(),
        }
    }

    fn admit(
        table: &ServiceTable,
        d: Option<&pb::ServiceDescription>,
        live: bool,
    ) -> Result<(Served, Learnt), Status> {
        table.admit(d, BridgeKind::Rust, || live, |served| served)
    }

    #[test]
    fn the_first_registration_defines_a_learning_service() {
        let table = ServiceTable::learning("pkg.Svc");
        let d = description(vec![method("A", 1, MethodKind::Unary)]);
        let (served, learnt) = admit(&table, Some(&d), false).expect("ok");
        assert!(learnt.defined);
        assert_eq!(served.as_deref(), Some(&[1][..]));
        assert!(table.methods().by_path("/pkg.Svc/A").is_some());
        assert_eq!(table.default_strategy(), Strategy::RoundRobin);
    }

    #[test]
    fn a_learning_service_refuses_a_first_registration_without_description() {
        let table = ServiceTable::learning("pkg.Svc");
        let err = admit(&table, None, false).expect_err("refused");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("must describe"), "{}", err.message());
        assert!(err.message().contains("Rust bridge"), "{}", err.message());
    }

    #[test]
    fn the_refusal_of_an_undescribed_python_bridge_says_what_python_users_do() {
        let table = ServiceTable::learning("pkg.Svc");
        let err = table
            .admit(None, BridgeKind::Python, || false, |served| served)
            .expect_err("refused");
        assert!(
            err.message().contains("grpc-router-bridge"),
            "{}",
            err.message()
        );
        assert!(
            !err.message().contains("rebuild the instance"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn an_added_method_is_learnt_and_served_only_by_its_instance() {
        let table = ServiceTable::learning("pkg.Svc");
        let v1 = description(vec![method("A", 1, MethodKind::Unary)]);
        let v2 = description(vec![
            method("A", 1, MethodKind::Unary),
            method("B", 2, MethodKind::ServerStreaming),
        ]);
        let (old, _) = admit(&table, Some(&v1), false).expect("ok");
        let (new, learnt) = admit(&table, Some(&v2), true).expect("ok");
        assert_eq!(learnt.added, ["B"]);
        assert!(serves(&new, 2) && serves(&new, 1));
        assert!(!serves(&old, 2) && serves(&old, 1));
        assert!(
            serves(&None, 2),
            "an undescribed instance serves every method"
        );
    }

    #[test]
    fn a_changed_kind_or_tag_is_refused_naming_the_difference() {
        let table = ServiceTable::learning("pkg.Svc");
        let v1 = description(vec![
            method("A", 1, MethodKind::Unary),
            method("B", 2, MethodKind::Unary),
        ]);
        admit(&table, Some(&v1), false).expect("ok");
        let kind = description(vec![method("A", 1, MethodKind::BidiStreaming)]);
        let err = admit(&table, Some(&kind), true).expect_err("refused");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message()
                .contains("`A` is bidirectional streaming here but unary"),
            "{}",
            err.message()
        );
        let tag = description(vec![method("A", 7, MethodKind::Unary)]);
        let err = admit(&table, Some(&tag), true).expect_err("refused");
        assert!(
            err.message().contains("tag 7 here but 1"),
            "{}",
            err.message()
        );
        let clash = description(vec![method("C", 2, MethodKind::Unary)]);
        let err = admit(&table, Some(&clash), true).expect_err("refused");
        assert!(err.message().contains("`B`'s"), "{}", err.message());
    }

    #[test]
    fn with_no_instance_left_the_next_registration_redefines_the_service() {
        let table = ServiceTable::learning("pkg.Svc");
        admit(
            &table,
            Some(&description(vec![method("A", 1, MethodKind::Unary)])),
            false,
        )
        .expect("ok");
        let changed = description(vec![method("A", 1, MethodKind::ClientStreaming)]);
        let (_, learnt) = admit(&table, Some(&changed), false).expect("ok");
        assert!(learnt.defined);
        assert_eq!(
            table.methods().by_path("/pkg.Svc/A").map(|m| m.kind),
            Some(MethodKind::ClientStreaming)
        );
    }

    #[test]
    fn a_compiled_service_learns_nothing_but_checks_compatibility() {
        const METHODS: &[crate::descriptor::MethodDescriptor] =
            &[crate::descriptor::MethodDescriptor {
                name: "A",
                path: "/pkg.Svc/A",
                tag: 1,
                kind: MethodKind::Unary,
                route_key: &[],
                idempotent: false,
            }];
        let table = ServiceTable::compiled(
            &ServiceDescriptor {
                name: "pkg.Svc",
                register_name: "pkg.SvcRouter",
                methods: METHODS,
                default_strategy: Strategy::PowerOfTwoChoices,
            },
            &[],
        );
        let extra = description(vec![
            method("A", 1, MethodKind::Unary),
            method("B", 2, MethodKind::Unary),
        ]);
        let (_, learnt) = admit(&table, Some(&extra), false).expect("ok");
        assert!(!learnt.defined && learnt.added.is_empty());
        assert!(table.methods().by_path("/pkg.Svc/B").is_none());
        let wrong = description(vec![method("A", 1, MethodKind::ServerStreaming)]);
        assert!(admit(&table, Some(&wrong), false).is_err());
    }

    #[test]
    fn instances_with_the_same_methods_share_one_set() {
        let table = ServiceTable::learning("pkg.Svc");
        let d = description(vec![method("A", 1, MethodKind::Unary)]);
        let (a, _) = admit(&table, Some(&d), false).expect("ok");
        let (b, _) = admit(&table, Some(&d), true).expect("ok");
        assert!(Arc::ptr_eq(
            a.as_ref().expect("ok"),
            b.as_ref().expect("ok")
        ));
    }

    #[test]
    fn a_description_with_a_wrong_path_is_invalid() {
        let table = ServiceTable::learning("pkg.Svc");
        let mut m = method("A", 1, MethodKind::Unary);
        m.path = "/other.Svc/A".to_owned();
        let err = admit(&table, Some(&description(vec![m])), false).expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("expected `/pkg.Svc/A`"),
            "{}",
            err.message()
        );
    }
}
