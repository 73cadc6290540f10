//! `coffer query`: a shell over the account's backup sets, in the manner
//! of Box Backup's `bbackupquery`. It keeps a current directory and a point
//! in time (`latest`, `as-at TIME` or `set ID`), and runs `ls`, `cd`,
//! `versions`, `get`, `restore`, `compare`, `undelete` and the rest there.
//!
//! Interactive use has line editing, history and tab completion of
//! commands and names (rustyline). `-c "cd x; ls"` and commands on stdin
//! run without a terminal; the first failing command ends the run with
//! exit status 2, and `compare` finding differences gives 1, as the
//! one-shot commands do. Names are shown and typed escaped (`names`).

use std::ffi::OsStr;
use std::io::{BufRead, IsTerminal};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use coffer_client::backup::human_bytes;
use coffer_client::browse::{self, Catalog, Selector};
use coffer_client::config::ClientConfig;
use coffer_client::{Repository, names, timefmt, undelete, wildcard};

use super::{complete, print, retrieve};

/// The shell's commands, with what `help` says of each.
pub const COMMANDS: [(&str, &str); 16] = [
    ("ls", "ls [-l] [-d] [-o] [PATTERN]   list (-l long, -d deleted files too, -o old versions too)"),
    ("cd", "cd DIR                         change directory (.. and / work)"),
    ("pwd", "pwd                            the current directory and point in time"),
    ("sets", "sets                           the backup sets"),
    ("as-at", "as-at TIME                     look at the newest set not newer than TIME"),
    ("set", "set ID                         look at one backup set (an id prefix)"),
    ("latest", "latest                         look at the newest set again"),
    ("versions", "versions NAME                  the versions of NAME across the sets"),
    ("get", "get NAME [LOCAL]               restore one file (to ./NAME by default)"),
    ("restore", "restore DIR LOCAL              restore a directory (wildcards: every match)"),
    ("compare", "compare [PATH]                 compare the backup with the disk"),
    ("undelete", "undelete NAME                  bring a deleted file or directory back into a new set"),
    ("usage", "usage                          what the store holds for this account"),
    ("help", "help                           this list"),
    ("quit", "quit                           leave (also exit, Ctrl-D)"),
    ("exit", "exit                           leave"),
];

/// Opens the account for writing, for `undelete` (a node's read session
/// cannot commit); `None` when the shell's own repository can write.
pub type Writer<'a> = Option<&'a dyn Fn() -> Result<Repository>>;

pub struct Shell<'a> {
    pub(super) repo: &'a Repository,
    config: &'a ClientConfig,
    pub(super) catalog: Catalog,
    pub(super) selector: Selector,
    pub(super) cwd: PathBuf,
    writer: Writer<'a>,
}

/// What one command asks of the loop.
enum Next {
    Go,
    /// Go on, but the run's exit status is 1 (differences found).
    Differs,
    Quit,
}

impl<'a> Shell<'a> {
    pub fn new(repo: &'a Repository, config: &'a ClientConfig, writer: Writer<'a>) -> Result<Shell<'a>> {
        let catalog = Catalog::load(repo)?;
        // One location: start in it, as the user most likely wants.
        let locations = catalog.locations();
        let cwd = match locations.as_slice() {
            [only] => PathBuf::from(OsStr::from_bytes(&only.path)),
            _ => PathBuf::from("/"),
        };
        Ok(Shell { repo, config, catalog, selector: Selector::Latest, cwd, writer })
    }

    /// Runs commands from `-c`, stdin, or the terminal; returns the exit status.
    pub fn run(&mut self, commands: Option<&str>) -> Result<u8> {
        if let Some(text) = commands {
            return self.run_script(std::iter::once(Ok(text.to_string())));
        }
        if !std::io::stdin().is_terminal() {
            return self.run_script(std::io::stdin().lock().lines());
        }
        self.interactive()
    }

    fn run_script(&mut self, lines: impl Iterator<Item = std::io::Result<String>>) -> Result<u8> {
        let mut status = 0;
        for line in lines {
            for command in split_commands(&line?)? {
                match self.run_command(&command) {
                    Ok(Next::Go) => {}
                    Ok(Next::Differs) => status = 1,
                    Ok(Next::Quit) => return Ok(status),
                    Err(e) => return Err(e.context(format!("`{}`", command.join(" ")))),
                }
            }
        }
        Ok(status)
    }

    fn interactive(&mut self) -> Result<u8> {
        let mut editor = complete::editor()?;
        let history = self.repo.cache.dir().join("query-history");
        let _ = editor.load_history(&history);
        println!("coffer query: {} backup sets; `help` lists the commands.", self.catalog.sets.len());
        loop {
            let prompt = format!("{}> ", names::show(&self.cwd));
            editor.set_helper(Some(complete::Helper::new(self)));
            let line = match editor.readline(&prompt) {
                Ok(line) => line,
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            let _ = editor.add_history_entry(line.as_str());
            let commands = match split_commands(&line) {
                Ok(commands) => commands,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    continue;
                }
            };
            for command in commands {
                match self.run_command(&command) {
                    Ok(Next::Quit) => {
                        let _ = editor.save_history(&history);
                        return Ok(0);
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
        }
        let _ = editor.save_history(&history);
        Ok(0)
    }

    fn run_command(&mut self, words: &[String]) -> Result<Next> {
        let (command, args) = words.split_first().expect("commands are not empty");
        let arg = |i: usize| args.get(i).map(String::as_str);
        match command.as_str() {
            "ls" => self.ls(args)?,
            "cd" => self.cd(arg(0).unwrap_or("/"))?,
            "pwd" => println!("{} ({})", names::show(&self.cwd), self.point_in_time()),
            "sets" => print::sets(&self.catalog, false)?,
            "as-at" => {
                let time = args.join(" ");
                self.selector = Selector::AsAt(timefmt::parse(&time).with_context(|| format!("`{time}`"))?);
            }
            "set" => {
                let id = arg(0).ok_or_else(|| anyhow!("set ID: give a backup set id or prefix"))?;
                self.catalog.find_set(id)?;
                self.selector = Selector::Set(id.to_string());
            }
            "latest" => self.selector = Selector::Latest,
            "versions" => {
                let path = self.resolve(arg(0).ok_or_else(|| anyhow!("versions NAME: give a name"))?);
                let pattern = wildcard::has_wildcards(&self.catalog.locate(&path)?.components);
                print::versions(&browse::versions_each(self.repo, &self.catalog, &path)?, pattern, false)?;
            }
            "get" => {
                let path = self.resolve(arg(0).ok_or_else(|| anyhow!("get NAME [LOCAL]: give a name"))?);
                let local = match arg(1) {
                    Some(local) => names::path_arg(local.as_ref()),
                    None => PathBuf::from(path.file_name().ok_or_else(|| anyhow!("get names a file"))?),
                };
                return Ok(exit_of(retrieve::restore(self.repo, &self.selector, &path, &local, false)?));
            }
            "restore" => {
                let (Some(dir), Some(local)) = (arg(0), arg(1)) else { bail!("restore DIR LOCAL") };
                let path = self.resolve(dir);
                let local = names::path_arg(local.as_ref());
                return Ok(exit_of(retrieve::restore(self.repo, &self.selector, &path, &local, false)?));
            }
            "compare" => {
                let path = self.resolve(arg(0).unwrap_or("."));
                let code = retrieve::compare(self.repo, self.config, &self.selector, &path, false, false)?;
                return Ok(exit_of(code));
            }
            "undelete" => self.undelete(arg(0).ok_or_else(|| anyhow!("undelete NAME: give a name"))?)?,
            "usage" => {
                let u = self.repo.backend.usage()?;
                println!(
                    "{} backup sets, {} live ({} objects)",
                    u.sets,
                    human_bytes(u.live_bytes),
                    u.objects
                );
            }
            "help" => COMMANDS.iter().for_each(|(_, help)| println!("  {help}")),
            "quit" | "exit" => return Ok(Next::Quit),
            other => bail!("unknown command `{other}`; `help` lists them"),
        }
        Ok(Next::Go)
    }

    fn ls(&self, args: &[String]) -> Result<()> {
        let (mut long, mut deleted, mut old) = (false, false, false);
        let mut target = None;
        for a in args {
            match a.strip_prefix('-').filter(|f| !f.is_empty()) {
                Some(flags) => {
                    for f in flags.chars() {
                        match f {
                            'l' => long = true,
                            'd' => deleted = true,
                            'o' => old = true,
                            _ => bail!("ls: unknown option -{f}"),
                        }
                    }
                }
                None => target = Some(a.as_str()),
            }
        }
        let path = self.resolve(target.unwrap_or("."));
        if let Some(children) = self.above_locations(&path) {
            children.iter().for_each(|c| println!("{c}/"));
            return Ok(());
        }
        let listed = browse::list(self.repo, &self.catalog, &path, &self.selector, deleted)?;
        print::listing(&listed, long, false)?;
        if old {
            for l in listed.iter().filter(|l| l.kind != coffer_client::tree::Kind::Dir && !l.deleted) {
                let versions =
                    browse::versions(self.repo, &self.catalog, &path.join(names::path_arg(l.name.as_ref())))?;
                for v in versions.iter().rev().skip(1) {
                    let size = v.size.map_or("deleted".to_string(), |s| s.to_string());
                    println!(
                        "  {} (old) {size:>12}  set {} of {}",
                        l.name,
                        &v.set_id[..12],
                        timefmt::format(v.set_time_ns)
                    );
                }
            }
        }
        Ok(())
    }

    fn cd(&mut self, dir: &str) -> Result<()> {
        let path = self.resolve(dir);
        if self.above_locations(&path).is_none() {
            let located = self.catalog.locate(&path)?;
            let (_, location) = self.catalog.select(&located.location, &self.selector)?;
            match browse::lookup(self.repo, location, &located.components)? {
                Some(e) if e.kind == coffer_client::tree::Kind::Dir => {}
                Some(_) => bail!("{} is not a directory", names::show(&path)),
                None => bail!("{} is not in the {} set", names::show(&path), self.point_in_time()),
            }
        }
        self.cwd = path;
        Ok(())
    }

    fn undelete(&mut self, name: &str) -> Result<()> {
        let path = self.resolve(name);
        let opened;
        let repo = match self.writer {
            Some(open) => {
                opened = open()?;
                &opened
            }
            None => self.repo,
        };
        let _lock = repo.cache.lock_writer("coffer query undelete")?;
        let done = undelete::undelete(repo, &Catalog::load(repo)?, &path)?;
        println!(
            "{} is back in new backup set {} (from set {}).",
            done.path,
            &done.set_id[..12],
            &done.from_set[..12]
        );
        self.catalog = Catalog::load(self.repo)?;
        Ok(())
    }

    /// `arg` (typed escaped) as an absolute path from the current directory.
    pub(super) fn resolve(&self, arg: &str) -> PathBuf {
        let typed = names::path_arg(arg.as_ref());
        let mut out = if typed.is_absolute() { PathBuf::from("/") } else { self.cwd.clone() };
        for c in typed.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::Normal(n) => out.push(n),
                _ => {}
            }
        }
        out
    }

    /// When `path` is above backup locations (`/`, `/home` for
    /// `/home/ann`), the next components of those locations, as shown.
    pub(super) fn above_locations(&self, path: &Path) -> Option<Vec<String>> {
        let names =
            browse::names_above(self.catalog.locations().into_iter().map(|l| l.path.as_slice()), path)?;
        Some(names.iter().map(|n| names::escape(n)).collect())
    }

    fn point_in_time(&self) -> String {
        match &self.selector {
            Selector::Latest => "latest".to_string(),
            Selector::AsAt(t) => format!("as at {}", timefmt::format(*t)),
            Selector::Set(id) => format!("set {id}"),
        }
    }
}

fn exit_of(code: std::process::ExitCode) -> Next {
    if code == std::process::ExitCode::SUCCESS { Next::Go } else { Next::Differs }
}

/// Splits a line into commands at `;` and each into words at spaces, both
/// outside quotes (`'...'`, `"..."`); backslashes are kept as typed, for
/// `names::unescape`. Empty commands are dropped.
pub fn split_commands(line: &str) -> Result<Vec<Vec<String>>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match (c, quote) {
            (q, Some(open)) if q == open => quote = None,
            (_, Some(_)) => word.get_or_insert_default().push(c),
            ('\'' | '"', None) => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (';', None) => {
                words.extend(word.take());
                commands.push(std::mem::take(&mut words));
            }
            (c, None) if c.is_whitespace() => words.extend(word.take()),
            (c, None) => word.get_or_insert_default().push(c),
        }
    }
    if quote.is_some() {
        bail!("unbalanced quotes in `{}`", line.trim());
    }
    words.extend(word);
    commands.push(words);
    Ok(commands.into_iter().filter(|c| !c.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_into_commands_and_words_like_a_shell() {
        let commands = split_commands(r#"cd 'My Documents'; ls -l "a;b" ;; pwd"#).unwrap();
        assert_eq!(commands, [vec!["cd", "My Documents"], vec!["ls", "-l", "a;b"], vec!["pwd"]]);
        assert!(split_commands("ls 'open").is_err());
        assert!(split_commands("  ").unwrap().is_empty());
        let escaped = split_commands(r"get bad-\xff ''").unwrap();
        assert_eq!(escaped, [vec!["get", r"bad-\xff", ""]], "backslashes stay; '' is an empty word");
    }
}
