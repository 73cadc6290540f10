//! Tab completion for `coffer query` (rustyline): the first word completes
//! to a command, later words to the names in the current directory (as
//! the shell shows them, escaped; directories end in `/`). The names are
//! read once per prompt, so completing costs no store access.

use anyhow::Result;
use rustyline::completion::{Completer, Pair};
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Context, Editor};

use super::query::{COMMANDS, Shell};

#[derive(rustyline::Helper, rustyline::Hinter, rustyline::Highlighter, rustyline::Validator)]
pub struct Helper {
    names: Vec<String>,
}

pub fn editor() -> Result<Editor<Helper, DefaultHistory>> {
    let config = Config::builder().completion_type(CompletionType::List).max_history_size(1000)?.build();
    Ok(Editor::with_config(config)?)
}

impl Helper {
    /// The names in the shell's current directory (none if it cannot list it).
    pub fn new(shell: &Shell) -> Helper {
        let names =
            match shell.above_locations(&shell.cwd) {
                Some(children) => children.into_iter().map(|c| c + "/").collect(),
                None => coffer_client::browse::list(
                    shell.repo,
                    &shell.catalog,
                    &shell.cwd,
                    &shell.selector,
                    false,
                )
                .map(|listed| {
                    listed
                        .into_iter()
                        .map(|l| if l.kind == coffer_client::tree::Kind::Dir { l.name + "/" } else { l.name })
                        .collect()
                })
                .unwrap_or_default(),
            };
        Helper { names }
    }

    fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<Pair>) {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let first_word = before[..start].trim().is_empty();
        let pairs: Vec<Pair> = if first_word {
            COMMANDS
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| name.starts_with(word))
                .map(|name| Pair { display: name.to_string(), replacement: format!("{name} ") })
                .collect()
        } else {
            self.names
                .iter()
                .filter(|name| name.starts_with(word))
                .map(|name| Pair { display: name.clone(), replacement: name.clone() })
                .collect()
        };
        (start, pairs)
    }
}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        Ok(self.candidates(line, pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_first_then_names_of_the_directory() {
        let helper = Helper { names: vec!["Documents/".into(), "notes.txt".into(), "bad-\\xff".into()] };
        let (start, pairs) = helper.candidates("ver", 3);
        assert_eq!((start, pairs[0].replacement.as_str()), (0, "versions "));
        let (start, pairs) = helper.candidates("get no", 6);
        assert_eq!(start, 4);
        assert_eq!(pairs.iter().map(|p| p.replacement.as_str()).collect::<Vec<_>>(), ["notes.txt"]);
        let (_, pairs) = helper.candidates("cd ", 3);
        assert_eq!(pairs.len(), 3);
    }
}
