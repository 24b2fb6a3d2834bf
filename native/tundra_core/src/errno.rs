//! The one mapping from errno values to the POSIX names Tundra reports
//! (`:eperm`, `:enoent`, ...), as OTP's `:socket` does.
//!
//! The NIF turns these names into atoms; the server sends errno numbers on
//! the wire and the client maps them here, so both paths report the same
//! atom for the same failure.

use std::io;

/// errno values and their lowercase POSIX names. Aliases (EWOULDBLOCK is
/// EAGAIN, ...) resolve to the entry listed here.
const TABLE: &[(i32, &str)] = &[
    (libc::EPERM, "eperm"),
    (libc::ENOENT, "enoent"),
    (libc::ESRCH, "esrch"),
    (libc::EINTR, "eintr"),
    (libc::EIO, "eio"),
    (libc::ENXIO, "enxio"),
    (libc::E2BIG, "e2big"),
    (libc::ENOEXEC, "enoexec"),
    (libc::EBADF, "ebadf"),
    (libc::ECHILD, "echild"),
    (libc::EAGAIN, "eagain"),
    (libc::ENOMEM, "enomem"),
    (libc::EACCES, "eacces"),
    (libc::EFAULT, "efault"),
    (libc::EBUSY, "ebusy"),
    (libc::EEXIST, "eexist"),
    (libc::EXDEV, "exdev"),
    (libc::ENODEV, "enodev"),
    (libc::ENOTDIR, "enotdir"),
    (libc::EISDIR, "eisdir"),
    (libc::EINVAL, "einval"),
    (libc::ENFILE, "enfile"),
    (libc::EMFILE, "emfile"),
    (libc::ENOTTY, "enotty"),
    (libc::ETXTBSY, "etxtbsy"),
    (libc::EFBIG, "efbig"),
    (libc::ENOSPC, "enospc"),
    (libc::ESPIPE, "espipe"),
    (libc::EROFS, "erofs"),
    (libc::EMLINK, "emlink"),
    (libc::EPIPE, "epipe"),
    (libc::EDOM, "edom"),
    (libc::ERANGE, "erange"),
    (libc::EDEADLK, "edeadlk"),
    (libc::ENAMETOOLONG, "enametoolong"),
    (libc::ENOLCK, "enolck"),
    (libc::ENOSYS, "enosys"),
    (libc::ENOTEMPTY, "enotempty"),
    (libc::ELOOP, "eloop"),
    (libc::ENOMSG, "enomsg"),
    (libc::EIDRM, "eidrm"),
    (libc::ENODATA, "enodata"),
    (libc::EPROTO, "eproto"),
    (libc::EBADMSG, "ebadmsg"),
    (libc::EOVERFLOW, "eoverflow"),
    (libc::EILSEQ, "eilseq"),
    (libc::ENOTSOCK, "enotsock"),
    (libc::EDESTADDRREQ, "edestaddrreq"),
    (libc::EMSGSIZE, "emsgsize"),
    (libc::EPROTOTYPE, "eprototype"),
    (libc::ENOPROTOOPT, "enoprotoopt"),
    (libc::EPROTONOSUPPORT, "eprotonosupport"),
    (libc::EOPNOTSUPP, "eopnotsupp"),
    (libc::EAFNOSUPPORT, "eafnosupport"),
    (libc::EADDRINUSE, "eaddrinuse"),
    (libc::EADDRNOTAVAIL, "eaddrnotavail"),
    (libc::ENETDOWN, "enetdown"),
    (libc::ENETUNREACH, "enetunreach"),
    (libc::ENETRESET, "enetreset"),
    (libc::ECONNABORTED, "econnaborted"),
    (libc::ECONNRESET, "econnreset"),
    (libc::ENOBUFS, "enobufs"),
    (libc::ETOOMANYREFS, "etoomanyrefs"),
    (libc::EISCONN, "eisconn"),
    (libc::ENOTCONN, "enotconn"),
    (libc::ETIMEDOUT, "etimedout"),
    (libc::ECONNREFUSED, "econnrefused"),
    (libc::EHOSTDOWN, "ehostdown"),
    (libc::EHOSTUNREACH, "ehostunreach"),
    (libc::EALREADY, "ealready"),
    (libc::EINPROGRESS, "einprogress"),
    (libc::ESTALE, "estale"),
    (libc::EDQUOT, "edquot"),
    (libc::ECANCELED, "ecanceled"),
    #[cfg(target_os = "linux")]
    (libc::EBADFD, "ebadfd"),
];

/// The lowercase POSIX name of `code` (e.g. `"eacces"`), or `"unknown"`.
pub fn name(code: i32) -> &'static str {
    TABLE
        .iter()
        .find(|(value, _)| *value == code)
        .map_or("unknown", |(_, name)| name)
}

/// A failure whose errno alone does not tell its cause: the errno callers
/// match on, and why, in words for the person who must act on it (which
/// socket was tried, which group is missing, what was not delegated).
/// Carried inside an `io::Error` (see `explained`), so every path that
/// passes `io::Error`s along passes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    pub errno: i32,
    pub why: String,
}

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", name(self.errno), self.why)
    }
}

impl std::error::Error for Explained {}

/// An `io::Error` of `errno` that says `why`.
pub fn explained(errno: i32, why: impl Into<String>) -> io::Error {
    let kind = io::Error::from_raw_os_error(errno).kind();
    io::Error::new(
        kind,
        Explained {
            errno,
            why: why.into(),
        },
    )
}

/// The errno of an `io::Error`: its own, or an `Explained` one's.
pub fn errno_of(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<Explained>())
            .map(|e| e.errno)
    })
}

/// Why, when the error says more than its errno.
pub fn why_of(err: &io::Error) -> Option<&str> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<Explained>())
        .map(|e| e.why.as_str())
}

/// The POSIX name of an `io::Error`: its errno's name, or a name for the
/// few error kinds that carry no errno.
pub fn io_error_name(err: &io::Error) -> &'static str {
    match errno_of(err) {
        Some(code) => name(code),
        None => match err.kind() {
            io::ErrorKind::TimedOut => "etimedout",
            io::ErrorKind::NotFound => "enoent",
            io::ErrorKind::PermissionDenied => "eacces",
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => "einval",
            io::ErrorKind::UnexpectedEof => "econnreset",
            io::ErrorKind::OutOfMemory => "enomem",
            _ => "eio",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_without_an_errno_are_named_by_their_kind() {
        let named = |kind: io::ErrorKind| io_error_name(&io::Error::new(kind, "test"));
        assert_eq!(named(io::ErrorKind::TimedOut), "etimedout");
        assert_eq!(named(io::ErrorKind::NotFound), "enoent");
        assert_eq!(named(io::ErrorKind::PermissionDenied), "eacces");
        assert_eq!(named(io::ErrorKind::InvalidInput), "einval");
        assert_eq!(named(io::ErrorKind::InvalidData), "einval");
        assert_eq!(named(io::ErrorKind::UnexpectedEof), "econnreset");
        assert_eq!(named(io::ErrorKind::OutOfMemory), "enomem");
        assert_eq!(named(io::ErrorKind::Other), "eio");
        assert_eq!(
            io_error_name(&io::Error::from_raw_os_error(libc::EPIPE)),
            "epipe"
        );
    }

    #[test]
    fn common_errnos_have_posix_names() {
        assert_eq!(name(libc::EPERM), "eperm");
        assert_eq!(name(libc::EACCES), "eacces");
        assert_eq!(name(libc::ENOENT), "enoent");
        assert_eq!(name(libc::EAGAIN), "eagain");
        assert_eq!(name(libc::ECONNREFUSED), "econnrefused");
        assert_eq!(name(-12345), "unknown");
    }

    #[test]
    fn every_name_is_its_constant_lowercased_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for (code, name) in TABLE {
            assert!(
                name.starts_with('e')
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            );
            assert!(seen.insert(*code), "{name} duplicates an earlier value");
        }
    }

    #[test]
    fn an_explained_error_keeps_its_errno_and_says_why() {
        let err = explained(libc::EACCES, "not in group tundra");
        assert_eq!(errno_of(&err), Some(libc::EACCES));
        assert_eq!(io_error_name(&err), "eacces");
        assert_eq!(why_of(&err), Some("not in group tundra"));
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let plain = io::Error::from_raw_os_error(libc::EBUSY);
        assert_eq!(
            (errno_of(&plain), why_of(&plain)),
            (Some(libc::EBUSY), None)
        );
        assert_eq!(err.to_string(), "eacces: not in group tundra");
    }

    #[test]
    fn io_errors_map_through_errno_first() {
        assert_eq!(
            io_error_name(&io::Error::from_raw_os_error(libc::EBUSY)),
            "ebusy"
        );
        assert_eq!(
            io_error_name(&io::Error::from(io::ErrorKind::TimedOut)),
            "etimedout"
        );
    }
}
