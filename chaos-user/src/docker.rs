//! The Docker side of targeting: container name or id -> main pid, and container lifecycle events.
use std::collections::HashMap;

use bollard::{
    Docker,
    errors::Error as BollardError,
    query_parameters::{EventsOptions, InspectContainerOptions},
};
use futures_util::StreamExt as _;
use thiserror::Error;
use tokio::sync::mpsc;

#[derive(Debug, Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon ({0}): is dockerd running? Inside a container, mount its socket: -v /var/run/docker.sock:/var/run/docker.sock (--cgroup PATH or --pid PID target without Docker)"
    )]
    Unreachable(String),
    #[error("no container named `{0}` (see `docker ps -a`)")]
    NotFound(String),
    #[error("container `{name}` is not running (it is {status}): start it first")]
    NotRunning { name: String, status: String },
    #[error("Docker answered for container `{name}`: {message}")]
    Api { name: String, message: String },
}

/// A running container, as far as syschaos needs it.
#[derive(Debug, Clone)]
pub struct RunningContainer {
    /// Name without Docker's leading `/`.
    pub name: String,
    pub pid: u32,
}

/// Connects and agrees on an API version, so older daemons (Debian's 20.10) answer too.
async fn connect() -> Result<Docker, DockerError> {
    let unreachable = |e: BollardError| DockerError::Unreachable(e.to_string());
    let docker = Docker::connect_with_local_defaults().map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

pub async fn inspect_running(name_or_id: &str) -> Result<RunningContainer, DockerError> {
    let docker = connect().await?;
    let info = docker
        .inspect_container(name_or_id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| match e {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => DockerError::NotFound(name_or_id.to_owned()),
            BollardError::DockerResponseServerError { message, .. } => DockerError::Api {
                name: name_or_id.to_owned(),
                message,
            },
            other => DockerError::Unreachable(other.to_string()),
        })?;
    let name = info
        .name
        .as_deref()
        .unwrap_or(name_or_id)
        .trim_start_matches('/')
        .to_owned();
    let state = info.state.unwrap_or_default();
    let pid = state.pid.unwrap_or(0);
    if state.running != Some(true) || pid <= 0 {
        let status = state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "not running".to_owned());
        return Err(DockerError::NotRunning { name, status });
    }
    Ok(RunningContainer {
        name,
        pid: pid as u32,
    })
}

/// What happened to a watched container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// (Re)started: it has a new cgroup, to be resolved again.
    Started,
    Died {
        exit_code: Option<String>,
    },
    /// Removed: it will not come back.
    Destroyed,
}

#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub name: String,
    pub lifecycle: Lifecycle,
}

/// Follows the lifecycle of the named containers until the receiver is dropped.
pub async fn watch(names: Vec<String>) -> Result<mpsc::Receiver<ContainerEvent>, DockerError> {
    let docker = connect().await?;
    let (sender, receiver) = mpsc::channel(64);
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("container".to_owned(), names.clone()),
        (
            "event".to_owned(),
            vec!["start".to_owned(), "die".to_owned(), "destroy".to_owned()],
        ),
    ]);
    tokio::spawn(async move {
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let mut events = docker.events(Some(options));
        while let Some(Ok(event)) = events.next().await {
            let attributes = event.actor.and_then(|a| a.attributes).unwrap_or_default();
            let Some(name) = attributes.get("name").cloned() else {
                continue;
            };
            let lifecycle = match event.action.as_deref() {
                Some("start") => Lifecycle::Started,
                Some("die") => Lifecycle::Died {
                    exit_code: attributes.get("exitCode").cloned(),
                },
                Some("destroy") => Lifecycle::Destroyed,
                _ => continue,
            };
            if sender
                .send(ContainerEvent { name, lifecycle })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Ok(receiver)
}

/// Whether a Docker daemon answers.
pub async fn ping() -> Result<(), DockerError> {
    connect().await.map(drop)
}
