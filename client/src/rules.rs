//! Which entries of a backup location a backup takes: the location's ordered
//! rules, evaluated top to bottom, first match wins, plus the exclusions
//! every user expects (the client's own cache, keys and local store; virtual
//! file systems such as `/proc`; sockets, which cannot be restored).
//!
//! A rule is `include`, `exclude` or `descend`, applies to files, to
//! directories or to both, and matches a glob or a regular expression:
//!
//! - A glob containing `/` matches the whole absolute path (`*` stays within
//!   one component, `**` crosses them); one without matches the entry's name.
//! - A regular expression is searched for in the whole absolute path.
//! - `descend` (directories only) excludes a directory but still walks it:
//!   its entries get their own rules, and an entry no rule matches is
//!   excluded too (a directory below is descended in the same way). So one
//!   file deep inside an excluded tree can be included, and a descended
//!   directory appears in the backup only when something inside it does.
//!
//! An entry no rule matches follows its parent: included, unless the parent
//! was descended.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One rule as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub action: Action,
    #[serde(default)]
    pub on: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Include,
    Exclude,
    Descend,
}

/// Which entries a rule looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Files,
    Dirs,
    #[default]
    All,
}

/// What happens to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Include,
    Exclude,
    /// Walk the directory, but keep only what its entries' rules include.
    Descend,
}

enum Pattern {
    /// `whole_path`: the glob names a path, not just a name.
    Glob {
        matcher: GlobMatcher,
        whole_path: bool,
    },
    Regex(Regex),
}

struct Rule {
    action: Action,
    on: Target,
    pattern: Pattern,
}

/// A location's compiled rules and the paths no backup may take.
#[derive(Default)]
pub struct Rules {
    rules: Vec<Rule>,
    private: Vec<PathBuf>,
}

impl RuleSpec {
    fn describe(&self) -> String {
        let pattern = match (&self.glob, &self.regex) {
            (Some(g), _) => format!("glob `{g}`"),
            (None, Some(r)) => format!("regex `{r}`"),
            (None, None) => "no pattern".into(),
        };
        format!("{:?} {:?} {pattern}", self.action, self.on).to_lowercase()
    }

    fn compile(&self) -> std::result::Result<Rule, String> {
        if self.action == Action::Descend && self.on == Target::Files {
            return Err("`descend` applies to directories only".into());
        }
        let pattern = match (&self.glob, &self.regex) {
            (Some(glob), None) => {
                let matcher = GlobBuilder::new(glob)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| e.kind().to_string())?
                    .compile_matcher();
                Pattern::Glob { matcher, whole_path: glob.contains('/') }
            }
            (None, Some(regex)) => Pattern::Regex(Regex::new(regex).map_err(|e| e.to_string())?),
            _ => return Err("give exactly one of `glob` and `regex`".into()),
        };
        Ok(Rule { action: self.action, on: self.on, pattern })
    }
}

impl Rule {
    fn matches(&self, path: &Path, is_dir: bool) -> bool {
        let applies = match self.on {
            Target::Files => !is_dir,
            Target::Dirs => is_dir,
            Target::All => true,
        };
        applies
            && match &self.pattern {
                Pattern::Glob { matcher, whole_path: true } => matcher.is_match(path),
                Pattern::Glob { matcher, whole_path: false } => {
                    path.file_name().is_some_and(|name| matcher.is_match(name))
                }
                Pattern::Regex(re) => re.is_match(path.as_os_str().as_encoded_bytes()),
            }
    }
}

impl Rules {
    /// Compiles a location's rules; a rule that does not parse is an error
    /// naming the location, the rule and the reason.
    pub fn compile(location: &str, specs: &[RuleSpec]) -> Result<Rules> {
        let rules = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                spec.compile().map_err(|reason| {
                    Error::Invalid(format!(
                        "location `{location}`, rule {} ({}): {reason}",
                        i + 1,
                        spec.describe()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(Rules { rules, private: Vec::new() })
    }

    /// Adds paths that are never backed up (the cache, the keys, a local store).
    pub fn with_private(mut self, paths: &[PathBuf]) -> Rules {
        self.private.extend_from_slice(paths);
        self
    }

    /// The verdict on `path`, whose parent was descended when `in_descended`.
    pub fn decide(&self, path: &Path, is_dir: bool, in_descended: bool) -> Verdict {
        if self.private.iter().any(|p| p == path) {
            return Verdict::Exclude;
        }
        match self.rules.iter().find(|r| r.matches(path, is_dir)).map(|r| r.action) {
            Some(Action::Include) => Verdict::Include,
            Some(Action::Exclude) => Verdict::Exclude,
            Some(Action::Descend) => Verdict::Descend,
            None if !in_descended => Verdict::Include,
            None if is_dir => Verdict::Descend,
            None => Verdict::Exclude,
        }
    }
}

/// File systems with nothing to back up: the kernel's views of itself.
/// A backup does not enter a directory on one of them.
pub fn is_virtual_fs(path: &Path) -> bool {
    use nix::sys::statfs::{
        CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, DEBUGFS_MAGIC, DEVPTS_SUPER_MAGIC, PROC_SUPER_MAGIC,
        SECURITYFS_MAGIC, SYSFS_MAGIC, TRACEFS_MAGIC, statfs,
    };
    let Ok(fs) = statfs(path) else { return false };
    [
        PROC_SUPER_MAGIC,
        SYSFS_MAGIC,
        DEVPTS_SUPER_MAGIC,
        CGROUP_SUPER_MAGIC,
        CGROUP2_SUPER_MAGIC,
        DEBUGFS_MAGIC,
        SECURITYFS_MAGIC,
        TRACEFS_MAGIC,
    ]
    .contains(&fs.filesystem_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: Action, on: Target, glob: Option<&str>, regex: Option<&str>) -> RuleSpec {
        RuleSpec { action, on, glob: glob.map(Into::into), regex: regex.map(Into::into) }
    }

    #[test]
    fn rules_decide_first_match_wins() {
        use Action::*;
        use Target::*;
        use Verdict as V;
        let specs = [
            rule(Include, Files, Some("/home/a/big/deep/keep.txt"), None),
            rule(Descend, Dirs, Some("/home/a/big"), None),
            rule(Exclude, Files, None, Some(r"\.(o|tmp)$")),
            rule(Exclude, Dirs, Some("/home/a/**/.cache"), None),
            rule(Exclude, All, Some("*.log"), None),
            rule(Include, Files, Some("*.log"), None),
        ];
        let rules = Rules::compile("home", &specs).unwrap().with_private(&["/home/a/.keys".into()]);
        // (path, is_dir, parent descended, verdict)
        let table = [
            ("/home/a/src/main.c", false, false, V::Include),
            ("/home/a/src/main.o", false, false, V::Exclude),
            ("/home/a/src/main.o", true, false, V::Include), // a file rule ignores directories
            ("/home/a/x/y/.cache", true, false, V::Exclude),
            ("/home/a/x/y/.cache", false, false, V::Include), // a dir rule ignores files
            ("/home/a/big", true, false, V::Descend),
            ("/home/a/big/deep", true, true, V::Descend), // unmatched inside descend: walked
            ("/home/a/big/deep/other.txt", false, true, V::Exclude),
            ("/home/a/big/deep/keep.txt", false, true, V::Include),
            ("/var/run/app.log", false, false, V::Exclude), // the earlier rule wins over the include
            ("/var/run/app.log", true, false, V::Exclude),
            ("/home/a/.keys", false, false, V::Exclude),
        ];
        for (path, is_dir, descended, want) in table {
            assert_eq!(rules.decide(Path::new(path), is_dir, descended), want, "{path} dir={is_dir}");
        }
    }

    #[test]
    fn a_glob_without_a_slash_matches_names_and_star_stays_in_one_component() {
        let rules =
            Rules::compile("l", &[rule(Action::Exclude, Target::All, Some("/a/*.tmp"), None)]).unwrap();
        assert_eq!(rules.decide(Path::new("/a/x.tmp"), false, false), Verdict::Exclude);
        assert_eq!(rules.decide(Path::new("/a/b/x.tmp"), false, false), Verdict::Include);
        let rules = Rules::compile("l", &[rule(Action::Exclude, Target::All, Some("x.tmp"), None)]).unwrap();
        assert_eq!(rules.decide(Path::new("/a/b/x.tmp"), false, false), Verdict::Exclude);
        assert_eq!(rules.decide(Path::new("/a/x.tmp/y"), false, false), Verdict::Include);
    }

    #[test]
    fn a_broken_rule_names_location_rule_and_reason() {
        let cases = [
            (
                rule(Action::Exclude, Target::All, None, Some("(unclosed")),
                "rule 2 (exclude all regex `(unclosed`)",
            ),
            (rule(Action::Exclude, Target::All, Some("a[b"), None), "glob `a[b`"),
            (rule(Action::Descend, Target::Files, Some("x"), None), "directories only"),
            (rule(Action::Include, Target::All, Some("x"), Some("y")), "exactly one"),
            (rule(Action::Include, Target::All, None, None), "exactly one"),
        ];
        for (bad, want) in cases {
            let ok = rule(Action::Include, Target::All, Some("*"), None);
            let e = Rules::compile("home", &[ok, bad]).err().expect("a broken rule is refused").to_string();
            assert!(e.contains("location `home`") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn proc_is_virtual_and_tmp_is_not() {
        if Path::new("/proc/self").exists() {
            assert!(is_virtual_fs(Path::new("/proc")));
        }
        assert!(!is_virtual_fs(&std::env::temp_dir()));
    }
}
