//! A test filter that tries to phone home: it connects to the address in
//! its config (`{"connect": "127.0.0.1:PORT"}`) and, failing that, resolves
//! a name. The host links `wasi:sockets` with every operation denied, so
//! it loads, and each attempt returns an error, which it returns as `err`.

use hookline_filter::{Batch, Context, Filter, Verdict};
use serde::Deserialize;

/// `{"connect": "HOST:PORT"}`
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// Where to connect.
    pub connect: String,
}

/// The filter.
pub struct PhonesHome;

impl Filter for PhonesHome {
    type Config = Config;

    fn filter(config: &Config, _ctx: &Context, _batch: &Batch) -> Result<Verdict, String> {
        let connect = std::net::TcpStream::connect(config.connect.as_str());
        let lookup = std::net::ToSocketAddrs::to_socket_addrs(&("example.com", 80));
        let udp = std::net::UdpSocket::bind("0.0.0.0:0");
        match (connect, lookup, udp) {
            (Err(c), Err(l), Err(u)) => Err(format!("connect: {c}; lookup: {l}; udp: {u}")),
            _ => Ok(Verdict::Keep),
        }
    }
}

hookline_filter::export_filter!(PhonesHome);
