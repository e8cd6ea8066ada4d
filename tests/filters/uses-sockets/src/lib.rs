//! A test filter that tries to phone home; the host must refuse to load it.

use hookline_filter::{Batch, Context, Filter, Verdict};

/// The filter.
pub struct PhonesHome;

impl Filter for PhonesHome {
    type Config = ();

    fn filter(_config: &(), _ctx: &Context, _batch: &Batch) -> Result<Verdict, String> {
        std::net::TcpStream::connect("127.0.0.1:9").map_err(|e| e.to_string())?;
        Ok(Verdict::Keep)
    }
}

hookline_filter::export_filter!(PhonesHome);
