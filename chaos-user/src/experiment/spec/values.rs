//! Scalars of the file: durations, numbers or percentages, text, commands.
use std::{fmt, time::Duration};

use serde::{Deserialize, de};

/// A duration: `500ms`, `10s`, `2m` (humantime), or a number of seconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?.0;
        if let Ok(seconds) = text.parse::<f64>() {
            return match (0.0..1e9).contains(&seconds) {
                true => Ok(Dur(Duration::from_secs_f64(seconds))),
                false => Err(de::Error::custom(format!("`{text}` is not a duration"))),
            };
        }
        humantime::parse_duration(&text).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "`{text}` is not a duration (e.g. 500ms, 10s, 2m): {e}"
            ))
        })
    }
}

/// A number, or a percentage written `20%`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Num(pub(super) f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Scalar::deserialize(d)?.0;
        let bad = || de::Error::custom(format!("`{text}` is not a number or a percentage"));
        let value = match text.trim().strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
            None => text.trim().parse::<f64>().map_err(|_| bad())?,
        };
        match value.is_finite() {
            true => Ok(Num(value)),
            false => Err(bad()),
        }
    }
}

/// A scalar taken as text: a string or a number (`errno: 13`).
#[derive(Debug, Clone)]
pub(super) struct Scalar(pub(super) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A command: a list of arguments, or a string run by `sh -c`.
#[derive(Debug, Clone)]
pub(super) struct CommandLine(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = CommandLine;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command: a list of arguments, or a string for sh -c")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandLine, E> {
                match v.trim().is_empty() {
                    true => Err(E::custom("the command is empty")),
                    false => Ok(CommandLine(vec!["sh".into(), "-c".into(), v.to_owned()])),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<Scalar>()? {
                    argv.push(arg.0);
                }
                match argv.first().is_none_or(|a| a.is_empty()) {
                    true => Err(de::Error::custom("the command is empty")),
                    false => Ok(CommandLine(argv)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}
