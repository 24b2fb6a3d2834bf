//! Link notifications: a socket subscribed to the kernel's link group
//! (RTNLGRP_LINK), read with a timeout by a thread of Tundra's own.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use neli::consts::rtnl::Rtm;
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, Nlmsghdr};
use neli::rtnl::Ifinfomsg;
use neli::socket::synchronous::NlSocketHandle;
use neli::utils::Groups;
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;

use super::link::link_state;
use super::socket_error;
use crate::platform::LinkEvent;

/// RTNLGRP_LINK (linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;

/// A socket that hears of every change to a link of its network namespace.
pub struct LinkMonitor {
    socket: NlSocketHandle,
}

impl LinkMonitor {
    /// Subscribes in the calling thread's network namespace; `read` waits
    /// at most `poll` for news.
    pub fn open(poll: Duration) -> io::Result<LinkMonitor> {
        let socket =
            NlSocketHandle::connect(NlFamily::Route, None, Groups::new_groups(&[RTNLGRP_LINK]))
                .map_err(socket_error)?;
        // SAFETY: the socket's fd is open for as long as `socket`, which
        // outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
        let poll = TimeVal::new(
            i64::try_from(poll.as_secs()).unwrap_or(i64::MAX) as _,
            poll.subsec_micros() as _,
        );
        setsockopt(&fd, ReceiveTimeout, &poll)?;
        Ok(LinkMonitor { socket })
    }

    /// The link changes of one read, or none when `poll` passed first.
    /// `ENOBUFS` means notifications were lost (the reader fell behind):
    /// the caller should look at the links' state again.
    pub fn read(&mut self) -> io::Result<Vec<LinkEvent>> {
        let messages = match self.socket.recv::<Rtm, Ifinfomsg>() {
            Ok((messages, _)) => messages,
            Err(e) => {
                let e = socket_error(e);
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Vec::new()),
                    _ => Err(e),
                };
            }
        };
        let mut events = Vec::new();
        for message in messages {
            let message: Nlmsghdr<Rtm, Ifinfomsg> = message.map_err(socket_error)?;
            let (NlPayload::Payload(link), kind) = (message.nl_payload(), *message.nl_type())
            else {
                continue;
            };
            if let Some(state) = link_state(link) {
                events.push(LinkEvent {
                    index: state.index,
                    up: state.up,
                    mtu: state.mtu,
                    removed: kind == Rtm::Dellink,
                });
            }
        }
        Ok(events)
    }
}
