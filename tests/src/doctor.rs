//! What `chaos-user doctor --json` says this host offers: the tests whose outcome depends on the
//! kernel (which engines work) ask it, and assert what follows from its answer.
use std::process::Command;

use serde_json::Value;

use crate::chaos_user_bin;

pub struct Doctor {
    pub json: Value,
}

impl Doctor {
    /// Runs `chaos-user doctor --json`; a doctor that fails or prints no report fails the test.
    pub fn run() -> Self {
        let output = Command::new(chaos_user_bin())
            .args(["doctor", "--json"])
            .output()
            .expect("run chaos-user doctor --json");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "chaos-user doctor --json failed ({}): {stderr}",
            output.status
        );
        let json: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "chaos-user doctor --json printed no JSON ({e}): {}{stderr}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        Self { json }
    }

    /// The report of one engine; every engine is listed.
    pub fn engine(&self, name: &str) -> &Value {
        self.json["engines"]
            .as_array()
            .unwrap_or_else(|| panic!("doctor lists no engines: {:#}", self.json))
            .iter()
            .find(|engine| engine["engine"] == name)
            .unwrap_or_else(|| panic!("doctor does not list engine {name}: {:#}", self.json))
    }

    /// Whether the engine works here: Ok, or why not (doctor's reason).
    pub fn engine_works(&self, name: &str) -> Result<(), String> {
        let engine = self.engine(name);
        match engine["works"].as_bool() {
            Some(true) => Ok(()),
            Some(false) => Err(engine["reason"]
                .as_str()
                .unwrap_or_else(|| panic!("engine {name} does not work, no reason: {engine}"))
                .to_owned()),
            None => panic!("no `works` for engine {name}: {engine}"),
        }
    }

    /// Fails the test, naming what is missing, unless the engine works here.
    pub fn require_engine(&self, name: &str) {
        if let Err(why) = self.engine_works(name) {
            panic!("this test needs the {name} engine, which does not work on this host: {why}");
        }
    }
}
