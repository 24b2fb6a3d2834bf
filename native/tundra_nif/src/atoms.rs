//! Atoms the NIF returns.

rustler::atoms! {
    ok,
    error,
    select,
    select_info,
    recv,
    send,
    closed,
    not_owner,
    not_tun,
    invalid_option,
    auto,
    server,
    dollar_socket = "$socket",
    dollar_tundra = "$tundra",
    // errno names used without an io::Error at hand
    eio,
    ebadf,
    enomem,
    esrch,
    // info/1 keys
    name,
    index,
    mtu,
    up,
    addresses,
    address,
    prefix,
    dstaddr,
    owner,
    fd,
}
