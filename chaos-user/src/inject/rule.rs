//! Perturbation rules as the user writes them: `SYSCALL=ERRNO_OR_SIGNAL[,key=value...]`, or
//! `SYSCALL,delay=D[,key=value...]` for a delay alone, or the equivalent `inject` flags. Parsing and validation happen before anything is attached.
use std::{str::FromStr as _, time::Duration};

use nix::sys::signal::Signal;

use super::{InjectError, engine::EngineChoice, paths};
use crate::names;

/// What the rule does to a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Errno(u32),
    Signal(Signal),
    /// No errno: the call runs, after the rule's delay.
    Delay,
}

impl Fault {
    /// `EACCES` / `SIGKILL`: the `errno` label of the injections metric.
    pub fn name(&self) -> String {
        match self {
            Fault::Errno(errno) => names::errno_name(*errno),
            Fault::Signal(signal) => signal.as_str().to_owned(),
            Fault::Delay => "delay".to_owned(),
        }
    }
}

/// When an errno takes the call's place. `Before`: the call is not executed (kprobe, fmod_ret,
/// lsm, cgroup-sock, ptrace). `After`: the call ran and the application sees the errno instead
/// of its result, as after a lost reply or a failed flush (the stop engine; a call that blocked
/// is interrupted, so for it the errno still comes before it completes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    Before,
    After,
}

impl When {
    pub fn name(self) -> &'static str {
        match self {
            When::Before => "before",
            When::After => "after",
        }
    }
}

impl std::str::FromStr for When {
    type Err = InjectError;

    fn from_str(text: &str) -> Result<Self, InjectError> {
        match text.trim() {
            "before" => Ok(When::Before),
            "after" => Ok(When::After),
            other => Err(InjectError::UnknownWhen(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    pub syscall: String,
    pub syscall_nr: u32,
    pub fault: Fault,
    pub probability: f64,
    pub nth: Option<u64>,
    pub count: Option<u64>,
    pub path_prefix: Option<String>,
    /// Argument index of the path `path_prefix` filters on.
    pub path_arg: Option<u32>,
    /// How long the rule applies, from the start of the injection.
    pub duration: Option<Duration>,
    /// Hold the call this long before it runs (or fails with the errno): ptrace engine.
    pub delay: Option<Duration>,
    /// When the errno (or delay) applies, if the user said; else the chosen engine's way.
    pub when: Option<When>,
    pub engine: EngineChoice,
}

impl RuleSpec {
    pub fn new(syscall: &str, fault: Fault) -> Result<Self, InjectError> {
        Ok(Self {
            syscall: syscall.to_owned(),
            syscall_nr: names::syscall_number(syscall)?,
            fault,
            probability: 1.0,
            nth: None,
            count: None,
            path_prefix: None,
            path_arg: None,
            duration: None,
            delay: None,
            when: None,
            engine: EngineChoice::Auto,
        })
    }

    /// `openat=EACCES,probability=0.5,count=10,path-prefix=/data,engine=kprobe,duration=30s`;
    /// `getppid,delay=10ms` (a delay alone), `fsync=EIO,delay=1s` (both).
    pub fn parse(text: &str) -> Result<Self, InjectError> {
        let bad = |why: String| InjectError::BadRule {
            rule: text.to_owned(),
            why,
        };
        let mut parts = text.split(',').map(str::trim);
        let head = parts.next().unwrap_or("");
        let mut rule = match head.split_once('=') {
            Some((syscall, fault)) => Self::new(syscall, parse_fault(fault)?)?,
            // A syscall alone: the rule delays it (a delay key must follow).
            None if text.contains("delay=") => Self::new(head, Fault::Delay)?,
            None => {
                return Err(bad(
                    "expected SYSCALL=ERRNO, SYSCALL=SIGNAL or SYSCALL,delay=DURATION first".into(),
                ));
            }
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            match key {
                "probability" | "p" => {
                    rule.probability = value
                        .parse()
                        .map_err(|_| bad(format!("probability `{value}` is not a number")))?
                }
                "nth" => {
                    rule.nth = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("nth `{value}` is not a whole number")))?,
                    )
                }
                "count" => {
                    rule.count = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("count `{value}` is not a whole number")))?,
                    )
                }
                "path-prefix" | "path_prefix" => rule.path_prefix = Some(value.to_owned()),
                "duration" => {
                    rule.duration = Some(
                        humantime::parse_duration(value)
                            .map_err(|e| bad(format!("duration `{value}`: {e}")))?,
                    )
                }
                "engine" => rule.engine = value.parse()?,
                "when" => rule.when = Some(value.parse()?),
                "delay" => {
                    rule.delay = Some(
                        humantime::parse_duration(value)
                            .map_err(|e| bad(format!("delay `{value}`: {e}")))?,
                    )
                }
                _ => {
                    return Err(bad(format!(
                        "unknown key `{key}` (known: probability, nth, count, path-prefix, duration, delay, when, engine)"
                    )));
                }
            }
        }
        rule.validate()
    }

    /// Checks what can be checked without the kernel; fills in the path argument.
    pub fn validate(mut self) -> Result<Self, InjectError> {
        if !(self.probability > 0.0 && self.probability <= 1.0) {
            return Err(InjectError::Probability(self.probability));
        }
        if self.nth == Some(0) || self.count == Some(0) {
            return Err(InjectError::ZeroLimit(self.syscall.clone()));
        }
        if self.nth.is_some() && self.count.is_some() {
            return Err(InjectError::NthAndCount(self.syscall.clone()));
        }
        if let Some(prefix) = &self.path_prefix {
            self.path_arg = Some(
                paths::path_argument(&self.syscall)
                    .ok_or_else(|| InjectError::NoPathArgument(self.syscall.clone()))?,
            );
            if prefix.is_empty() || prefix.len() > chaos_common::PATH_PREFIX_MAX - 1 {
                return Err(InjectError::PathPrefixLength(
                    prefix.clone(),
                    chaos_common::PATH_PREFIX_MAX - 1,
                ));
            }
        }
        if let Fault::Errno(errno) = self.fault
            && !(1..4096).contains(&errno)
        {
            return Err(InjectError::UnknownErrno(errno.to_string()));
        }
        match (self.fault, self.delay) {
            (_, Some(delay)) if delay.is_zero() => {
                return Err(InjectError::BadDelay(self.syscall.clone()));
            }
            (Fault::Delay, None) => return Err(InjectError::BadDelay(self.syscall.clone())),
            (Fault::Signal(_), Some(_)) => {
                return Err(InjectError::SignalWithDelay(self.syscall.clone()));
            }
            _ => {}
        }
        if matches!(self.fault, Fault::Signal(_)) && self.when.is_some() {
            return Err(InjectError::SignalWithWhen(self.syscall.clone()));
        }
        Ok(self)
    }
}

/// `EACCES`, `13`, or a signal: `SIGKILL`, `KILL`.
pub fn parse_fault(text: &str) -> Result<Fault, InjectError> {
    let upper = text.trim().to_ascii_uppercase();
    if let Ok(number) = upper.parse::<u32>() {
        return Ok(Fault::Errno(number));
    }
    if upper.starts_with("SIG") {
        return parse_signal(&upper).map(Fault::Signal);
    }
    parse_errno(&upper).map(Fault::Errno)
}

pub fn parse_errno(text: &str) -> Result<u32, InjectError> {
    let upper = text.trim().to_ascii_uppercase();
    if let Ok(number) = upper.parse::<u32>() {
        return Ok(number);
    }
    // nix names every errno of the platform; search its table instead of keeping our own.
    (1..4096)
        .find(|&n| names::errno_name(n) == upper)
        .ok_or_else(|| InjectError::UnknownErrno(text.to_owned()))
}

pub fn parse_signal(text: &str) -> Result<Signal, InjectError> {
    let upper = text.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper.clone()
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| InjectError::UnknownSignal(text.to_owned()))
}

/// A rule file: one inline rule per line; blank lines and `#` comments are skipped.
pub fn read_rule_file(path: &std::path::Path) -> Result<Vec<RuleSpec>, InjectError> {
    let text = std::fs::read_to_string(path).map_err(|e| InjectError::BadRule {
        rule: path.display().to_string(),
        why: e.to_string(),
    })?;
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(number, line)| {
            RuleSpec::parse(line).map_err(|e| InjectError::BadRule {
                rule: format!("{}:{number}", path.display()),
                why: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inline_rules() {
        let rule =
            RuleSpec::parse("openat=EACCES,probability=0.5,count=10,path-prefix=/data").unwrap();
        assert_eq!(rule.syscall, "openat");
        assert_eq!(rule.fault, Fault::Errno(13));
        assert_eq!(rule.probability, 0.5);
        assert_eq!(rule.count, Some(10));
        assert_eq!(rule.path_arg, Some(1));
        let rule = RuleSpec::parse("fsync=SIGKILL,nth=3").unwrap();
        assert_eq!(rule.fault, Fault::Signal(Signal::SIGKILL));
        assert_eq!(rule.nth, Some(3));
        assert_eq!(RuleSpec::parse("read=5").unwrap().fault, Fault::Errno(5));
        let rule = RuleSpec::parse("getppid,delay=10ms,probability=0.5").unwrap();
        assert_eq!(rule.fault, Fault::Delay);
        assert_eq!(rule.fault.name(), "delay");
        assert_eq!(rule.delay, Some(Duration::from_millis(10)));
        let rule = RuleSpec::parse("fsync=EIO,delay=1s").unwrap();
        assert_eq!(rule.fault, Fault::Errno(libc::EIO as u32));
        assert_eq!(rule.delay, Some(Duration::from_secs(1)));
        assert_eq!(rule.when, None);
        let rule = RuleSpec::parse("fdatasync=EIO,when=after").unwrap();
        assert_eq!(rule.when, Some(When::After));
    }

    #[test]
    fn refuses_bad_rules_with_the_reason() {
        let error = |text: &str| RuleSpec::parse(text).unwrap_err().to_string();
        assert!(error("opnat=EACCES").contains("unknown syscall `opnat`"));
        assert!(error("openat=EACESS").contains("unknown errno `EACESS`"));
        assert!(error("openat=SIGNOPE").contains("unknown signal `SIGNOPE`"));
        assert!(error("openat=EACCES,probability=0").contains("probability 0"));
        assert!(error("openat=EACCES,probability=1.5").contains("probability 1.5"));
        assert!(error("getppid=EPERM,path-prefix=/x").contains("getppid takes no path"));
        assert!(error("openat=EACCES,nth=2,count=3").contains("either nth or count"));
        assert!(error("openat=EACCES,colour=red").contains("unknown key `colour`"));
        assert!(error("openat=EACCES,engine=magic").contains("unknown engine `magic`"));
        assert!(error("getppid").contains("SYSCALL,delay=DURATION"));
        assert!(error("getppid,delay=0ms").contains("longer than 0"));
        assert!(error("getppid,delay=soon").contains("delay `soon`"));
        assert!(error("fsync=SIGKILL,delay=1s").contains("signal rule cannot delay"));
        assert!(error("fsync=EIO,when=later").contains("`later`: when is before or after"));
        assert!(error("fsync=SIGKILL,when=after").contains("a signal rule has no when"));
    }
}
