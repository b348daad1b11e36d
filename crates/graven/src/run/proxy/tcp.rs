//! TCP mode (`[run] proxy = "tcp"`): each client connection forwarded byte
//! for byte to the backend with the fewest connections, for services that
//! do not speak HTTP.

use std::sync::Arc;

use super::{CONNECT_TIMEOUT, Shared};

/// Forwards `client` to a backend until both directions have ended. With
/// no backend, or none that accepts, the client is closed.
pub(super) async fn serve(shared: &Arc<Shared>, mut client: tokio::net::TcpStream) {
    let mut tried = Vec::new();
    loop {
        let (lease, _) = shared.lease(&tried);
        let Some(lease) = lease else { return };
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(lease.backend)).await {
            Ok(Ok(mut backend)) => {
                let _ = backend.set_nodelay(true);
                // Half-closes pass through: a client that has sent its
                // whole request still reads the response.
                let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                return;
            }
            // The lease goes with this attempt.
            _ => tried.push(lease.backend),
        }
    }
}
