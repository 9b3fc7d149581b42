//! The rules the tracer applies, and the decision taken at a syscall-entry stop, step for step as
//! the kernel engines take it (`chaos-ebpf/src/inject.rs`): expiry, path prefix, then nth or
//! probability, then the count budget. The tracer is one thread, so the counters are plain
//! integers; only the injection count is shared (an atomic the session reads).
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::sys;

/// One rule for one target, as the session hands it over.
#[derive(Debug, Clone)]
pub struct PtraceRule {
    /// Index into the targets given to [`super::TracerThread::start`].
    pub target: usize,
    pub syscall_nr: u32,
    /// errno to return (the call is not executed); None: the call runs, after the delay.
    pub errno: Option<u32>,
    /// How long the thread is held at entry before the call (or the errno) goes ahead.
    pub delay_ns: u64,
    /// In (0, 1]; ignored with `nth`.
    pub probability: f64,
    pub nth: Option<u64>,
    pub count: Option<u64>,
    /// (argument index, prefix): only calls whose path argument starts with the prefix.
    pub path: Option<(u32, Vec<u8>)>,
    /// CLOCK_MONOTONIC ns after which the rule no longer applies; 0: never.
    pub expires_ns: u64,
    /// Injections made, read by the session for the live view and the metrics.
    pub injections: Arc<AtomicU64>,
}

/// What to do with the call at this entry stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub rule: u32,
    pub syscall: u32,
    /// 0: none.
    pub errno: u32,
    pub delay_ns: u64,
}

struct Rule {
    spec: PtraceRule,
    threshold: u64,
    matched: u64,
    taken: u64,
}

/// Syscall numbers the lookup tables cover (x86_64 has fewer than 500).
const SYSCALLS: usize = 1024;
const NO_RULE: u16 = u16::MAX;

pub struct Rules {
    rules: Vec<Rule>,
    /// Per target: syscall number -> index in `rules`.
    by_target: Vec<Box<[u16]>>,
    random: XorShift,
    /// For the path prefix read: never reallocated.
    path_buffer: Vec<u8>,
}

impl Rules {
    pub fn new(targets: usize, specs: Vec<PtraceRule>) -> Self {
        let mut by_target = vec![vec![NO_RULE; SYSCALLS].into_boxed_slice(); targets];
        let longest_prefix = specs
            .iter()
            .filter_map(|spec| spec.path.as_ref().map(|(_, prefix)| prefix.len()))
            .max()
            .unwrap_or(0);
        let rules: Vec<Rule> = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                if let Some(slot) = by_target
                    .get_mut(spec.target)
                    .and_then(|table| table.get_mut(spec.syscall_nr as usize))
                {
                    *slot = index as u16;
                }
                Rule {
                    threshold: probability_threshold(spec.probability),
                    spec,
                    matched: 0,
                    taken: 0,
                }
            })
            .collect();
        Self {
            rules,
            by_target,
            random: XorShift::seeded(),
            path_buffer: vec![0; longest_prefix],
        }
    }

    /// The decision for syscall `nr` of a thread of `target` at its entry stop; `args` are the
    /// call's arguments, `tid` the thread (its memory is read only for a path rule).
    pub fn decide(
        &mut self,
        target: usize,
        nr: u64,
        args: &[u64; 6],
        tid: i32,
    ) -> Option<Decision> {
        let index = *self.by_target.get(target)?.get(nr as usize)?;
        if index == NO_RULE {
            return None;
        }
        let rule = &mut self.rules[index as usize];
        let spec = &rule.spec;
        if spec.expires_ns != 0 && sys::now_ns() > spec.expires_ns {
            return None;
        }
        if let Some((arg, prefix)) = &spec.path {
            let address = args[*arg as usize];
            if !sys::starts_with(tid, address, prefix, &mut self.path_buffer) {
                return None;
            }
        }
        if let Some(nth) = spec.nth {
            rule.matched += 1;
            if rule.matched != nth {
                return None;
            }
        } else if u64::from(self.random.next_u32()) >= rule.threshold {
            return None;
        }
        let taken = rule.taken;
        rule.taken += 1;
        if spec.count.is_some_and(|count| taken >= count) {
            return None;
        }
        spec.injections.fetch_add(1, Ordering::Relaxed);
        Some(Decision {
            rule: index.into(),
            syscall: nr as u32,
            errno: spec.errno.unwrap_or(0),
            delay_ns: spec.delay_ns,
        })
    }

    /// An injection decided but never carried out (the tracer detached first): not counted.
    pub fn undo(&self, rule: u32) {
        if let Some(rule) = self.rules.get(rule as usize) {
            rule.spec.injections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// True when no rule can inject any more: all expired, or their nth/count reached. A tracer
    /// given no rule at all is idle on purpose (`PtraceEngine::hold`), never spent.
    pub fn all_spent(&self) -> bool {
        let now = sys::now_ns();
        !self.rules.is_empty()
            && self.rules.iter().all(|rule| {
                let spec = &rule.spec;
                (spec.expires_ns != 0 && now > spec.expires_ns)
                    || spec.nth.is_some_and(|nth| rule.matched >= nth)
                    || spec.count.is_some_and(|count| rule.taken >= count)
            })
    }
}

/// Injects when a random u32 is below this: p * 2^32, and 2^32 (always) for p = 1; as the kernel.
fn probability_threshold(probability: f64) -> u64 {
    ((probability * 4_294_967_296.0).round() as u64).clamp(1, 1 << 32)
}

/// xorshift64*: plenty for coin flips, no system call per draw.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        let mut seed = [0u8; 8];
        // SAFETY: getrandom fills the buffer we pass.
        unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        Self(u64::from_ne_bytes(seed) | 1)
    }

    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(nr: u32) -> PtraceRule {
        PtraceRule {
            target: 0,
            syscall_nr: nr,
            errno: Some(1),
            delay_ns: 0,
            probability: 1.0,
            nth: None,
            count: None,
            path: None,
            expires_ns: 0,
            injections: Arc::default(),
        }
    }

    fn decisions(rules: &mut Rules, nr: u64, calls: usize) -> Vec<bool> {
        (0..calls)
            .map(|_| rules.decide(0, nr, &[0; 6], 0).is_some())
            .collect()
    }

    #[test]
    fn count_nth_and_other_syscalls() {
        let counted = PtraceRule {
            count: Some(2),
            ..rule(39)
        };
        let nth = PtraceRule {
            nth: Some(3),
            probability: 0.5, // ignored with nth, as in the kernel
            ..rule(74)
        };
        let injections = counted.injections.clone();
        let mut rules = Rules::new(1, vec![counted, nth]);
        assert_eq!(decisions(&mut rules, 39, 4), [true, true, false, false]);
        assert_eq!(injections.load(Ordering::Relaxed), 2);
        assert!(!rules.all_spent());
        assert_eq!(decisions(&mut rules, 74, 4), [false, false, true, false]);
        assert!(rules.all_spent());
        assert_eq!(decisions(&mut rules, 0, 2), [false, false]);
        assert_eq!(rules.decide(1, 39, &[0; 6], 0), None); // no such target
        assert_eq!(rules.decide(0, 100_000, &[0; 6], 0), None);
    }

    #[test]
    fn probability_and_expiry() {
        let half = PtraceRule {
            probability: 0.5,
            ..rule(39)
        };
        let expired = PtraceRule {
            expires_ns: 1,
            ..rule(74)
        };
        let mut rules = Rules::new(1, vec![half, expired]);
        let hits = decisions(&mut rules, 39, 10_000)
            .into_iter()
            .filter(|&hit| hit)
            .count();
        // Binomial(10000, 0.5): sd 50; 6 sigma.
        assert!((4700..=5300).contains(&hits), "{hits}");
        assert_eq!(decisions(&mut rules, 74, 3), [false, false, false]);
        assert_eq!(probability_threshold(1.0), 1 << 32);
        assert_eq!(probability_threshold(0.5), 1 << 31);
    }
}
