//! stub
use super::{Change, Dataplane, DataplaneError, VirtualService};
/// stub
#[derive(Debug)]
pub struct Nft;
impl Dataplane for Nft {
    async fn list(&mut self) -> Result<Vec<VirtualService>, DataplaneError> {
        Ok(vec![])
    }
    async fn apply(&mut self, _c: &[Change]) -> Result<(), DataplaneError> {
        Ok(())
    }
}
