//! The one way to open a session, for every command: resolve the targets (refusing the same
//! cgroup twice), load the eBPF object ([`prepare`]: nothing attached yet, so a refusal leaves
//! nothing behind), then take the injection locks, add the targets, install the rules, attach
//! and follow Docker ([`Prepared::start`]). [`Opened`] stops the tracer and detaches everything
//! when dropped.
use std::{sync::Arc, time::Duration};

use anyhow::bail;
use tokio::sync::mpsc;

use super::{Change, LoadOptions, Session, SessionError};
use crate::{
    docker::{self, ContainerEvent, Lifecycle},
    ebpf::kernel_now_ns,
    inject::{
        InjectError, choice::Asker, engine::Capabilities, injector::InstalledRule,
        lock::InjectionLock, rule::RuleSpec,
    },
    snapshot::Snapshot,
    target::{self, CgroupRoot, Target, TargetSpec},
};

/// What to open a session on.
pub struct Request {
    pub specs: Vec<TargetSpec>,
    pub cgroup_root: CgroupRoot,
    pub load: LoadOptions,
}

/// Targets resolved and the object loaded; nothing attached.
pub struct Prepared {
    session: Session,
    targets: Vec<Target>,
    cgroup_root: CgroupRoot,
}

/// Targets resolved; nothing loaded.
pub struct Resolved {
    targets: Vec<Target>,
    cgroup_root: CgroupRoot,
    load: LoadOptions,
}

/// Resolves the targets and loads the eBPF object.
pub async fn prepare(request: Request) -> anyhow::Result<Prepared> {
    Ok(resolve(request).await?.load()?)
}

/// Resolves the targets, refusing none or the same cgroup twice.
pub async fn resolve(request: Request) -> anyhow::Result<Resolved> {
    if request.specs.is_empty() {
        bail!(
            "nothing to attach to: give --container NAME, --cgroup PATH, --pid PID, --pod-uid UID, --cgroup-glob PATTERN or --shared-pid-namespace"
        );
    }
    let targets = resolve_all(&request.specs, &request.cgroup_root).await?;
    Ok(Resolved {
        targets,
        cgroup_root: request.cgroup_root,
        load: request.load,
    })
}

impl Resolved {
    pub fn labels(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.label.clone()).collect()
    }

    pub fn cgroup_dirs(&self) -> Vec<std::path::PathBuf> {
        self.targets.iter().map(|t| t.cgroup.v2.clone()).collect()
    }

    /// Loads the eBPF object (nothing attached).
    pub fn load(self) -> Result<Prepared, SessionError> {
        Ok(Prepared {
            session: Session::load(&self.load)?,
            targets: self.targets,
            cgroup_root: self.cgroup_root,
        })
    }
}

async fn resolve_all(
    specs: &[TargetSpec],
    cgroup_root: &CgroupRoot,
) -> anyhow::Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    for spec in specs {
        for target in target::resolve_many(spec, cgroup_root).await? {
            if let Some(twin) = targets.iter().find(|t| t.cgroup_id == target.cgroup_id) {
                bail!(
                    "{} and {} are the same cgroup ({}): give it once",
                    twin.label,
                    target.label,
                    target.cgroup.v2.display()
                );
            }
            targets.push(target);
        }
    }
    Ok(targets)
}

/// When the session injects: the rules to install on every target now (`run` installs its own
/// per phase), and when they expire.
#[derive(Default)]
pub struct Injection {
    pub rules: Vec<RuleSpec>,
    pub expires_after: Option<Duration>,
}

impl Prepared {
    pub fn labels(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.label.clone()).collect()
    }

    pub fn capabilities(&self) -> Result<Capabilities, SessionError> {
        self.session.capabilities()
    }

    pub fn take_trace_events(
        &self,
        syscalls: Option<&[u32]>,
    ) -> Result<aya::maps::RingBuf<aya::maps::MapData>, SessionError> {
        self.session.take_trace_events(syscalls)
    }

    /// Locks the targets against a second injector (with `injection`), adds them, installs the
    /// rules, attaches, and follows the containers among them.
    pub async fn start(self, injection: Option<Injection>) -> anyhow::Result<Opened> {
        let mut locks = Vec::new();
        let mut planned = Vec::new();
        if let Some(injection) = &injection {
            check_one_rule_per_syscall(&self.targets, &injection.rules)?;
            // Probing loads the engines' programs: only when there are rules to choose for.
            let capabilities = match injection.rules.is_empty() {
                true => None,
                false => Some(self.session.capabilities()?),
            };
            let mut engines = Vec::new();
            if let Some(capabilities) = &capabilities {
                for spec in &injection.rules {
                    let engine = capabilities.choose(spec, Asker::Command)?;
                    if let Some(warning) = capabilities.ptrace_warning(spec, engine) {
                        eprintln!("syschaos: warning: {warning}");
                    }
                    engines.push(engine);
                }
            }
            for target in &self.targets {
                locks.push(InjectionLock::acquire(&target.label, target.cgroup_id)?);
                for (spec, &engine) in injection.rules.iter().zip(&engines) {
                    planned.push(InstalledRule {
                        index: planned.len() as u32,
                        target: target.label.clone(),
                        cgroup_id: target.cgroup_id,
                        spec: spec.clone(),
                        engine,
                    });
                }
            }
        }
        let containers: Vec<String> = self
            .targets
            .iter()
            .filter(|t| matches!(t.spec, TargetSpec::Container(_)))
            .map(|t| t.label.clone())
            .collect();
        let session = Arc::new(self.session);
        // The tracer detaches on every way out of here, errors and panics included.
        let ptrace_guard = StopPtraceOnDrop(session.clone());
        for target in self.targets {
            session.add(target)?;
        }
        let now = kernel_now_ns();
        let limit = injection.as_ref().and_then(|i| i.expires_after);
        for rule in planned {
            let limit = rule.spec.duration.into_iter().chain(limit).min();
            let expires_ns = limit.map_or(0, |limit| now + limit.as_nanos() as u64);
            session.install(rule, expires_ns)?;
        }
        session.start_ptrace()?;
        session.start()?;
        let events = match containers.is_empty() {
            true => None,
            false => Some(docker::watch(containers).await?),
        };
        Ok(Opened {
            ptrace_guard,
            session,
            events,
            cgroup_root: self.cgroup_root,
            _locks: locks,
        })
    }
}

fn check_one_rule_per_syscall(targets: &[Target], rules: &[RuleSpec]) -> Result<(), InjectError> {
    for (i, rule) in rules.iter().enumerate() {
        if rules[..i]
            .iter()
            .any(|earlier| earlier.syscall_nr == rule.syscall_nr)
        {
            return Err(InjectError::DuplicateRule {
                syscall: rule.syscall.clone(),
                target: targets.first().map(|t| t.label.clone()).unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// An open session: attached, following its containers. Dropping it stops the tracer, then
/// (once the last reference to the session goes) detaches every program.
pub struct Opened {
    ptrace_guard: StopPtraceOnDrop,
    pub session: Arc<Session>,
    events: Option<mpsc::Receiver<ContainerEvent>>,
    cgroup_root: CgroupRoot,
    _locks: Vec<InjectionLock>,
}

/// What became of a followed container.
pub enum Followed {
    Restarted {
        cgroup_id: u64,
    },
    /// It started again but cannot be counted (why).
    Unfollowable(String),
    Died {
        exit_code: Option<String>,
    },
    /// Removed: no longer counted. `left`: targets still active.
    Removed {
        left: usize,
    },
}

impl Opened {
    /// The next lifecycle event of a followed container (never, without containers).
    pub async fn next_event(&mut self) -> Option<ContainerEvent> {
        match &mut self.events {
            Some(receiver) => receiver.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Follows a container through a restart or its removal.
    pub async fn follow(&self, event: &ContainerEvent) -> Result<Followed, SessionError> {
        follow(&self.session, &self.cgroup_root, event).await
    }

    /// The containers' events, for a caller that waits on them itself (with [`follow`]).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<ContainerEvent>> {
        self.events.take()
    }

    pub fn cgroup_root(&self) -> &CgroupRoot {
        &self.cgroup_root
    }

    /// Stops the tracer and reads the last counts; the caller then drops the session.
    pub fn close(self) -> Result<Snapshot, SessionError> {
        self.ptrace_guard.0.stop_ptrace();
        self.session.snapshot()
    }
}

/// Follows a container through a restart (the target resolved again, outside the session's
/// lock) or its removal.
pub async fn follow(
    session: &Session,
    cgroup_root: &CgroupRoot,
    event: &ContainerEvent,
) -> Result<Followed, SessionError> {
    let name = &event.name;
    Ok(match &event.lifecycle {
        Lifecycle::Started => {
            let spec = TargetSpec::Container(name.clone());
            match target::resolve(&spec, cgroup_root).await {
                Ok(target) => {
                    let cgroup_id = target.cgroup_id;
                    session.change(name, Change::Replaced(target))?;
                    Followed::Restarted { cgroup_id }
                }
                Err(e) => Followed::Unfollowable(e.to_string()),
            }
        }
        Lifecycle::Died { exit_code } => Followed::Died {
            exit_code: exit_code.clone(),
        },
        Lifecycle::Destroyed => Followed::Removed {
            left: session.change(name, Change::Deactivated)?,
        },
    })
}

/// Detaches the ptrace engine when dropped: no tracee may outlive the session stopped.
struct StopPtraceOnDrop(Arc<Session>);

impl Drop for StopPtraceOnDrop {
    fn drop(&mut self) {
        self.0.stop_ptrace();
    }
}
