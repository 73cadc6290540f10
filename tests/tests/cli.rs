//! What every binary tells the shell and the manual: completion scripts
//! and a manual page, generated from its own command-line definition.

use std::process::Command;
use std::time::Duration;

use coffer_tests::binary;
use coffer_tests::cluster::run_bounded;

fn printed(bin: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(binary(bin));
    cmd.args(args).env_remove("COFFER_NODE_CONFIG");
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{bin} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_binary_prints_completions_and_a_manual_page_without_any_configuration() {
    // A command of each, and one nested deeper where there is one.
    let commands = [
        ("coffer", "restore", "resume"),
        ("coffer-admin", "housekeep", "set-retention"),
        ("coffer-node", "rebuild-index", "rebuild-index"),
    ];
    for (bin, subcommand, nested) in commands {
        let bash = printed(bin, &["completions", "bash"]);
        assert!(bash.contains("complete -F") && bash.contains(nested), "{bin}: {bash}");
        let zsh = printed(bin, &["completions", "zsh"]);
        assert!(zsh.starts_with(&format!("#compdef {bin}")), "{bin}: {zsh}");
        let man = printed(bin, &["man"]);
        assert!(man.contains(&format!(".TH {bin} 1")), "{bin}: {man}");
        // Roff escapes hyphens.
        assert!(man.contains(&subcommand.replace('-', "\\-")), "{bin}'s manual page lists its commands");
    }
}
