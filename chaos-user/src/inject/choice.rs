//! Which engine a rule runs on: the cheapest that honours it. An errno before the call: the
//! pre-call kernel engines (kprobe, fmod-ret, lsm, cgroup-sock), else the ptrace tracer, which
//! stops every call of the target. An errno after the call, and delays: the stop engine, which
//! the kernel wakes for the perturbed calls only. Experiments prefer the stop engine to ptrace
//! even for errnos: a tracer's cost would read as the fault's in the verdict.
use super::{
    InjectError,
    engine::{Capabilities, Engine, EngineChoice},
    rule::{Fault, RuleSpec, When},
};

/// Who asks for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// `inject`, `attach --inject`: an errno comes before the call unless `when=after`.
    Command,
    /// `run`: without `when`, the stop engine before ptrace.
    Experiment,
}

/// The errno engines that act before the call, cheapest first.
const PRE_CALL: [Engine; 4] = [
    Engine::Kprobe,
    Engine::FmodRet,
    Engine::Lsm,
    Engine::CgroupSock,
];

impl Engine {
    /// When its errno (or delay) comes; None for the signal engine.
    pub fn when(self) -> Option<When> {
        match self {
            Engine::Signal => None,
            Engine::Stop => Some(When::After),
            _ => Some(When::Before),
        }
    }

    fn can_delay(self) -> bool {
        matches!(self, Engine::Ptrace | Engine::Stop)
    }
}

impl Capabilities {
    /// The engine a rule runs on: the forced one if it can, else the cheapest that can.
    pub fn choose(&self, rule: &RuleSpec, asker: Asker) -> Result<Engine, InjectError> {
        if let Fault::Signal(_) = rule.fault {
            return match rule.engine {
                EngineChoice::Auto | EngineChoice::Forced(Engine::Signal) => match &self.signal {
                    Ok(()) => Ok(Engine::Signal),
                    Err(why) => Err(InjectError::EngineUnavailable {
                        engine: Engine::Signal,
                        why: why.clone(),
                    }),
                },
                EngineChoice::Forced(engine) => Err(InjectError::SignalNeedsSignalEngine(engine)),
            };
        }
        let mut reasons = Vec::new();
        for engine in candidates(rule, asker)? {
            match (self.of(engine), engine.programs(&rule.syscall)) {
                (Ok(()), Some(_)) => return Ok(engine),
                (Err(why), _) => reasons.push(format!("{engine}: {why}")),
                (Ok(()), None) => {
                    reasons.push(format!("{engine}: covers only {}", engine.coverage()))
                }
            }
        }
        Err(InjectError::NoEngine {
            syscall: rule.syscall.clone(),
            reasons: reasons.join("; "),
        })
    }

    /// What to tell the user of a rule that runs on ptrace: its cost, and the faster way if
    /// this kernel has one.
    pub fn ptrace_warning(&self, rule: &RuleSpec, engine: Engine) -> Option<String> {
        if engine != Engine::Ptrace {
            return None;
        }
        let cost = "the ptrace engine stops every call of the target in chaos-user (microseconds \
                    each: a busy server can lose most of its throughput)";
        let stop_covers = self.stop.is_ok() && Engine::Stop.programs(&rule.syscall).is_some();
        // A rule that forces ptrace would refuse when=after: it names the engine instead.
        let forced = rule.engine == EngineChoice::Forced(Engine::Ptrace);
        let faster = match (stop_covers, rule.fault) {
            (false, _) => "no faster engine covers it here".to_owned(),
            (true, Fault::Delay) => "faster: engine=stop (only the delayed calls stop; a call \
                                     that did not block is held after it ran)"
                .to_owned(),
            (true, _) if forced => "faster: engine=stop (only the perturbed calls stop; the \
                                    errno replaces the result of a call that ran)"
                .to_owned(),
            (true, _) => "faster: when=after (the stop engine: only the perturbed calls stop; \
                          the errno replaces the result of a call that ran)"
                .to_owned(),
        };
        Some(format!("{}: {cost}; {faster}", rule_text(rule)))
    }
}

/// The engines to try, in order; a forced engine that cannot honour the rule is refused.
fn candidates(rule: &RuleSpec, asker: Asker) -> Result<Vec<Engine>, InjectError> {
    let delay = rule.delay.is_some();
    if let EngineChoice::Forced(engine) = rule.engine {
        if engine == Engine::Signal {
            return Err(InjectError::SignalEngineNeedsSignal);
        }
        // Only a tracer can hold a thread (BPF programs cannot sleep).
        if delay && !engine.can_delay() {
            return Err(InjectError::DelayNeedsPtrace(engine));
        }
        if let Some(when) = rule.when
            && engine.when() != Some(when)
        {
            return Err(InjectError::WhenNotHonoured { engine, when });
        }
        return Ok(vec![engine]);
    }
    let before = |then: &[Engine]| [&PRE_CALL[..], then].concat();
    Ok(match (delay, rule.when) {
        (_, Some(When::After)) => vec![Engine::Stop],
        (true, Some(When::Before)) => vec![Engine::Ptrace],
        (true, None) => vec![Engine::Stop, Engine::Ptrace],
        (false, Some(When::Before)) => before(&[Engine::Ptrace]),
        (false, None) => match asker {
            Asker::Command => before(&[Engine::Ptrace, Engine::Stop]),
            Asker::Experiment => before(&[Engine::Stop, Engine::Ptrace]),
        },
    })
}

/// `openat=EACCES` / `openat,delay=1ms`: the rule as the warning names it.
fn rule_text(rule: &RuleSpec) -> String {
    match rule.fault {
        Fault::Delay => format!("{},delay", rule.syscall),
        _ => format!("{}={}", rule.syscall, rule.fault.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(kprobe: bool, lsm: bool) -> Capabilities {
        caps_with_ptrace(kprobe, lsm, true)
    }

    fn caps_with_ptrace(kprobe: bool, lsm: bool, ptrace: bool) -> Capabilities {
        let works = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err("not on this kernel".to_owned())
            }
        };
        Capabilities {
            kprobe: works(kprobe),
            fmod_ret: works(false),
            lsm: works(lsm),
            cgroup_sock: Ok(()),
            signal: Ok(()),
            ptrace: works(ptrace),
            stop: works(ptrace),
        }
    }

    /// The choice of a command (`inject`), which the tests below are about.
    trait Choose {
        fn pick(&self, rule: &RuleSpec) -> Result<Engine, InjectError>;
    }

    impl Choose for Capabilities {
        fn pick(&self, rule: &RuleSpec) -> Result<Engine, InjectError> {
            self.choose(rule, Asker::Command)
        }
    }

    fn rule(text: &str) -> RuleSpec {
        RuleSpec::parse(text).unwrap()
    }

    /// An experiment takes the stop engine where a command takes ptrace; both take a pre-call
    /// engine first, and honour `when`.
    #[test]
    fn experiments_prefer_stop_and_when_is_honoured() {
        let fsync = rule("fsync=EIO");
        let kernel = caps(false, true);
        assert_eq!(
            kernel.choose(&fsync, Asker::Command).unwrap(),
            Engine::Ptrace
        );
        assert_eq!(
            kernel.choose(&fsync, Asker::Experiment).unwrap(),
            Engine::Stop
        );
        let openat = rule("openat=EACCES");
        assert_eq!(
            kernel.choose(&openat, Asker::Experiment).unwrap(),
            Engine::Lsm
        );
        let after = rule("openat=EACCES,when=after");
        assert_eq!(kernel.choose(&after, Asker::Command).unwrap(), Engine::Stop);
        let before = rule("fsync=EIO,when=before");
        assert_eq!(
            kernel.choose(&before, Asker::Experiment).unwrap(),
            Engine::Ptrace
        );
        let error = kernel.pick(&rule("openat=EACCES,when=after,engine=lsm"));
        assert!(
            error
                .unwrap_err()
                .to_string()
                .contains("lsm cannot honour when=after"),
            "lsm is a pre-call engine"
        );
        let error = kernel.pick(&rule("openat=EACCES,when=before,engine=stop"));
        assert!(
            error
                .unwrap_err()
                .to_string()
                .contains("stop cannot honour when=before")
        );
        // Where the stop engine cannot work, when=after has nowhere to go.
        let error = caps_with_ptrace(true, true, false)
            .pick(&after)
            .unwrap_err();
        assert!(
            error.to_string().contains("stop: not on this kernel"),
            "{error}"
        );
    }

    #[test]
    fn ptrace_is_named_with_its_cost_and_the_faster_way() {
        let fsync = rule("fsync=EIO");
        let kernel = caps(false, true);
        let warning = kernel.ptrace_warning(&fsync, Engine::Ptrace).unwrap();
        assert!(
            warning.starts_with("fsync=EIO: the ptrace engine stops every call"),
            "{warning}"
        );
        assert!(warning.contains("faster: when=after"), "{warning}");
        let forced = rule("fsync=EIO,engine=ptrace");
        let warning = kernel.ptrace_warning(&forced, Engine::Ptrace).unwrap();
        assert!(warning.contains("faster: engine=stop"), "{warning}");
        let delay = rule("fsync,delay=1ms,engine=ptrace");
        let warning = kernel.ptrace_warning(&delay, Engine::Ptrace).unwrap();
        assert!(warning.contains("faster: engine=stop"), "{warning}");
        assert_eq!(kernel.ptrace_warning(&fsync, Engine::Stop), None);
        let mut no_stop = caps(false, true);
        no_stop.stop = Err("no".into());
        let warning = no_stop.ptrace_warning(&fsync, Engine::Ptrace).unwrap();
        assert!(warning.contains("no faster engine"), "{warning}");
    }

    #[test]
    fn auto_picks_the_best_engine_that_covers_the_call() {
        let openat = RuleSpec::parse("openat=EACCES").unwrap();
        let connect = RuleSpec::parse("connect=ECONNREFUSED").unwrap();
        let fsync = RuleSpec::parse("fsync=EIO").unwrap();
        assert_eq!(caps(true, true).pick(&openat).unwrap(), Engine::Kprobe);
        assert_eq!(caps(false, true).pick(&openat).unwrap(), Engine::Lsm);
        assert_eq!(
            caps(false, false).pick(&connect).unwrap(),
            Engine::CgroupSock
        );
        // No in-kernel engine covers fsync there: the tracer does.
        assert_eq!(caps(false, true).pick(&fsync).unwrap(), Engine::Ptrace);
        assert_eq!(caps(true, true).pick(&fsync).unwrap(), Engine::Kprobe);
        let error = caps_with_ptrace(false, true, false)
            .pick(&fsync)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no engine can inject fsync errors"),
            "{error}"
        );
        assert!(error.contains("kprobe: not on this kernel"), "{error}");
        assert!(error.contains("lsm: covers only"), "{error}");
        assert!(error.contains("ptrace: not on this kernel"), "{error}");
    }

    /// fmod-ret comes after kprobe and before lsm; where the kernel has no error-injection list
    /// (as in these tests: no probe ran) it covers only the LSM table's syscalls.
    #[test]
    fn auto_picks_fmod_ret_after_kprobe() {
        let with_fmod_ret = |kprobe| Capabilities {
            fmod_ret: Ok(()),
            ..caps(kprobe, true)
        };
        let openat = RuleSpec::parse("openat=EACCES").unwrap();
        let fsync = RuleSpec::parse("fsync=EIO").unwrap();
        assert_eq!(with_fmod_ret(true).pick(&openat).unwrap(), Engine::Kprobe);
        assert_eq!(with_fmod_ret(false).pick(&openat).unwrap(), Engine::FmodRet);
        assert_eq!(with_fmod_ret(false).pick(&fsync).unwrap(), Engine::Ptrace);
        let forced = RuleSpec::parse("fsync=EIO,engine=fmod-ret").unwrap();
        let error = with_fmod_ret(false).pick(&forced).unwrap_err().to_string();
        assert!(error.contains("fmod-ret: covers only"), "{error}");
        let forced = RuleSpec::parse("openat=EACCES,engine=fmod-ret").unwrap();
        let error = caps(true, true).pick(&forced).unwrap_err().to_string();
        assert!(error.contains("fmod-ret: not on this kernel"), "{error}");
    }

    #[test]
    fn delays_default_to_the_stop_engine() {
        let delay = rule("openat,delay=10ms");
        let both = rule("openat=EACCES,delay=10ms");
        // Even where kprobe could inject the errno, only a tracer can delay.
        assert_eq!(caps(true, true).pick(&delay).unwrap(), Engine::Stop);
        assert_eq!(caps(true, true).pick(&both).unwrap(), Engine::Stop);
        let before = rule("openat,delay=10ms,when=before");
        assert_eq!(caps(true, true).pick(&before).unwrap(), Engine::Ptrace);
        let mut no_stop = caps(true, true);
        no_stop.stop = Err("no".into());
        assert_eq!(no_stop.pick(&delay).unwrap(), Engine::Ptrace);
        let forced = rule("openat=EACCES,delay=10ms,engine=kprobe");
        let error = caps(true, true).pick(&forced).unwrap_err().to_string();
        assert!(error.contains("kprobe cannot delay calls"), "{error}");
        let error = caps_with_ptrace(true, true, false)
            .pick(&delay)
            .unwrap_err()
            .to_string();
        assert!(error.contains("ptrace: not on this kernel"), "{error}");
        let forced = rule("getppid=EPERM,engine=ptrace");
        assert_eq!(caps(true, true).pick(&forced).unwrap(), Engine::Ptrace);
    }

    #[test]
    fn the_stop_engine_takes_errnos_and_delays_when_forced() {
        for text in [
            "fsync=EIO,engine=stop",
            "read,delay=10ms,engine=stop",
            "read=EAGAIN,delay=10ms,engine=stop",
        ] {
            let rule = RuleSpec::parse(text).unwrap();
            assert_eq!(caps(false, false).pick(&rule).unwrap(), Engine::Stop);
        }
        // Calls whose registers it could not set, or that never return.
        for syscall in ["exit_group", "execve", "rt_sigreturn"] {
            let rule = RuleSpec::parse(&format!("{syscall}=EPERM,engine=stop")).unwrap();
            let error = caps(true, true).pick(&rule).unwrap_err().to_string();
            assert!(error.contains("stop: covers only"), "{error}");
        }
        let mut down = caps(true, true);
        down.stop = Err("no tracer here".into());
        let rule = RuleSpec::parse("getppid=EPERM,engine=stop").unwrap();
        let error = down.pick(&rule).unwrap_err().to_string();
        assert!(error.contains("stop: no tracer here"), "{error}");
    }

    #[test]
    fn forced_engines_are_honoured_or_refused() {
        let mut connect = RuleSpec::parse("connect=ECONNREFUSED,engine=lsm").unwrap();
        assert!(
            caps(true, false)
                .pick(&connect)
                .unwrap_err()
                .to_string()
                .contains("lsm: not on this kernel")
        );
        connect.engine = EngineChoice::Forced(Engine::CgroupSock);
        assert_eq!(caps(true, true).pick(&connect).unwrap(), Engine::CgroupSock);
        let kill = RuleSpec::parse("fsync=SIGKILL,nth=3").unwrap();
        assert_eq!(caps(false, false).pick(&kill).unwrap(), Engine::Signal);
    }
}
