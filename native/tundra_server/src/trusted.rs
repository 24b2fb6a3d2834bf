//! Files and folders the server trusts: only root may be able to change
//! them, nor swap them for others.
//!
//! A path is walked one name at a time from `/` (a relative one from the
//! current folder's absolute path), each name looked at and opened
//! without following links (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`)
//! relative to the folder opened before it. Every
//! folder entered, those a symlink's target passes through included, is
//! checked on the open fd (root's, writable by nobody else), and so is
//! what the path ends at; a symlink is resolved by the walk itself, from
//! the folder it lies in. What is checked is therefore what is used: no
//! one but root can change any folder on the way afterwards, and the
//! file is read from the fd that was checked.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{open, openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

/// Links followed on one walk at most, as the kernel's own limit.
const MAX_LINKS: usize = 40;

/// What a walk must end at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
}

/// Opens `path` (a regular file, or a folder) for reading, after checking
/// that it, and every folder passed through to reach it, is root's and
/// writable by root only; `what` names it in the error.
pub fn open_root_only(path: &Path, kind: Kind, what: &str) -> Result<OwnedFd, String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("the current folder: {e}"))?
            .join(path)
    };
    let fail = |at: &Path, e: nix::Error| format!("{}: {e}", at.display());
    let mut at = PathBuf::from("/");
    let mut folder = enter_root(what)?;
    let mut names: VecDeque<OsString> = names_of(&absolute);
    let mut links = 0;
    while let Some(name) = names.pop_front() {
        let next_at = at.join(&name);
        let stat = fstatat(&folder, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| fail(&next_at, e))?;
        let last = names.is_empty();
        match file_type(&stat) {
            SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(fail(&next_at, nix::Error::ELOOP));
                }
                let target =
                    readlinkat(&folder, name.as_os_str()).map_err(|e| fail(&next_at, e))?;
                let target = Path::new(&target);
                if target.is_absolute() {
                    at = PathBuf::from("/");
                    folder = enter_root(what)?;
                }
                for (i, part) in names_of(target).into_iter().enumerate() {
                    names.insert(i, part);
                }
            }
            SFlag::S_IFDIR if !last || kind == Kind::Folder => {
                check(&stat, &next_at, what)?;
                folder = open_same(&folder, &name, OFlag::O_DIRECTORY, &stat, &next_at)?;
                at = next_at;
            }
            SFlag::S_IFREG if last && kind == Kind::File => {
                check(&stat, &next_at, what)?;
                return open_same(&folder, &name, OFlag::O_NONBLOCK, &stat, &next_at);
            }
            _ if last => {
                return Err(format!(
                    "{}: not a {}",
                    next_at.display(),
                    if kind == Kind::File { "file" } else { "folder" }
                ))
            }
            _ => return Err(fail(&next_at, nix::Error::ENOTDIR)),
        }
    }
    match kind {
        Kind::Folder => Ok(folder),
        Kind::File => Err(format!("{}: not a file", at.display())),
    }
}

/// Opens `name` in `folder` (which only root can change, so `name` is
/// still what `stat` describes, or refused) for reading, without
/// following a link; the fd must be of the file `stat` describes.
fn open_same(
    folder: &OwnedFd,
    name: &OsStr,
    extra: OFlag,
    stat: &FileStat,
    at: &Path,
) -> Result<OwnedFd, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra;
    let fd =
        openat(folder, name, flags, Mode::empty()).map_err(|e| format!("{}: {e}", at.display()))?;
    let opened = fstat(&fd).map_err(|e| format!("{}: {e}", at.display()))?;
    if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
        return Err(format!("{}: changed while opened", at.display()));
    }
    Ok(fd)
}

/// Reads the file `path`, checked as `open_root_only` does.
pub fn read_root_only(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let fd = open_root_only(path, Kind::File, what)?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(bytes)
}

fn enter_root(what: &str) -> Result<OwnedFd, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root = open("/", flags, Mode::empty()).map_err(|e| format!("/: {e}"))?;
    let stat = fstat(root.as_fd()).map_err(|e| format!("/: {e}"))?;
    check(&stat, Path::new("/"), what)?;
    Ok(root)
}

/// The names a path is walked through: `.` dropped, `..` kept (it is a
/// folder entered and checked like any other).
fn names_of(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsStr::from_bytes(b"..").to_os_string()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// Root's, and writable by no one else.
fn check(stat: &FileStat, at: &Path, what: &str) -> Result<(), String> {
    if stat.st_uid != 0 || stat.st_mode & 0o022 != 0 {
        return Err(format!(
            "{} may be written by users other than root: keep {what} where only root can write ({})",
            at.display(),
            fit_for(what)
        ));
    }
    Ok(())
}

/// Where `what` belongs, for the message.
fn fit_for(what: &str) -> &'static str {
    match what {
        "the configuration" => "such as /etc/tundra",
        "the state folder" => "such as /run/tundra or /var/lib/tundra",
        _ => "such as /run",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Files root owns are what these tests walk: as another user they say
    /// why they did not run (under `CI=true` that is a failure).
    fn as_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the trusted-path tests need root under CI"
        );
        eprintln!("NOTICE: skipping a trusted-path test: not root");
        false
    }

    /// A folder of root's under /run (only root writes /run), removed on drop.
    struct Folder(PathBuf);

    impl Folder {
        fn new(test: &str) -> Folder {
            let path = PathBuf::from(format!("/run/tundra-trusted-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            Folder(path)
        }

        fn file(&self, name: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, b"allow user:1000 10.0.0.0/8\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_root_only_file_is_read_through_relative_and_absolute_links() {
        if !as_root() {
            return;
        }
        let folder = Folder::new("links");
        let conf = folder.file("server.conf", 0o644);
        symlink("server.conf", folder.0.join("relative")).unwrap();
        symlink(&conf, folder.0.join("absolute")).unwrap();
        for path in [
            &conf,
            &folder.0.join("relative"),
            &folder.0.join("absolute"),
        ] {
            let bytes = read_root_only(path, "the configuration").unwrap();
            assert_eq!(bytes, b"allow user:1000 10.0.0.0/8\n");
        }
        assert!(open_root_only(&folder.0, Kind::Folder, "the state folder").is_ok());
    }

    #[test]
    fn a_walk_ends_only_at_what_it_was_asked_for() {
        if !as_root() {
            return;
        }
        let folder = Folder::new("kinds");
        let conf = folder.file("server.conf", 0o644);
        let err = |path: &Path, kind| open_root_only(path, kind, "the configuration").unwrap_err();
        assert!(
            err(&conf.join("x"), Kind::File).contains("ENOTDIR"),
            "a file is no folder"
        );
        assert!(err(&conf, Kind::Folder).ends_with("not a folder"));
        assert!(err(&folder.0, Kind::File).ends_with("not a file"));
        assert!(err(Path::new("/dev/null"), Kind::File).ends_with("not a file"));
        assert!(err(&folder.0.join("missing"), Kind::File).contains("ENOENT"));
    }

    #[test]
    fn a_loop_of_links_ends_the_walk() {
        if !as_root() {
            return;
        }
        let folder = Folder::new("loop");
        symlink("b", folder.0.join("a")).unwrap();
        symlink("a", folder.0.join("b")).unwrap();
        let err = open_root_only(&folder.0.join("a"), Kind::File, "the configuration").unwrap_err();
        assert!(err.contains("ELOOP"), "{err}");
        // A chain of MAX_LINKS links is followed; one more is a loop.
        folder.file("end", 0o644);
        symlink("end", folder.0.join("l0")).unwrap();
        for i in 1..=MAX_LINKS {
            symlink(format!("l{}", i - 1), folder.0.join(format!("l{i}"))).unwrap();
        }
        let last = |i: usize| folder.0.join(format!("l{i}"));
        assert!(open_root_only(&last(MAX_LINKS - 1), Kind::File, "the configuration").is_ok());
        let err = open_root_only(&last(MAX_LINKS), Kind::File, "the configuration").unwrap_err();
        assert!(err.contains("ELOOP"), "{err}");
    }

    #[test]
    fn what_others_may_write_is_refused_and_the_message_says_where_it_belongs() {
        if !as_root() {
            return;
        }
        let folder = Folder::new("writable");
        let group_writable = folder.file("group.conf", 0o664);
        let err = open_root_only(&group_writable, Kind::File, "the configuration").unwrap_err();
        assert!(
            err.contains("may be written by users other than root"),
            "{err}"
        );
        assert!(err.contains("such as /etc/tundra"), "{err}");

        let open = folder.0.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open_root_only(&open, Kind::Folder, "the state folder").unwrap_err();
        assert!(
            err.contains("such as /run/tundra or /var/lib/tundra"),
            "{err}"
        );
        // A link through the writable folder is refused for the folder.
        symlink("open/../group.conf", folder.0.join("through")).unwrap();
        let err =
            open_root_only(&folder.0.join("through"), Kind::File, "the socket folder").unwrap_err();
        assert!(err.contains("/open:") || err.contains("/open "), "{err}");
        assert!(err.contains("such as /run)"), "{err}");
    }

    #[test]
    fn paths_are_walked_name_by_name_with_parents_kept() {
        let names: Vec<_> = names_of(Path::new("/etc/./tundra/../x/server.conf"))
            .into_iter()
            .collect();
        assert_eq!(names, ["etc", "tundra", "..", "x", "server.conf"]);
    }
}
