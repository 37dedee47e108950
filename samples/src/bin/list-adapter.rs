//! An out-of-process Mixer adapter (Istio 1.1+ style): a separate gRPC
//! service that answers the `listentry` template's `HandleListEntryService`.
//! A handler points Mixer at it with `connection.address`; its params arrive
//! with each call, as a `google.protobuf.Struct`: `{entries: [...]}` lists
//! the allowed values, and anything else is refused with NOT_FOUND.

use std::time::Duration;

use api::google::rpc::Status;
use api::istio::mixer::adapter::model::v1beta1::CheckResult;
use api::istio::policy::v1beta1::value::Value as Wire;
use api::listentry::HandleListEntryRequest;
use api::listentry::handle_list_entry_service_server::{
    HandleListEntryService, HandleListEntryServiceServer,
};
use clap::Parser;
use prost::Message;
use tonic::{Request, Response};

#[derive(Parser)]
#[command(about = "A sample out-of-process Mixer adapter serving the listentry template")]
struct Args {
    /// Where to serve, host:port.
    #[arg(long, default_value = "127.0.0.1:44225")]
    listen: String,
}

struct ListAdapter;

/// The allowed values from the handler's params.
fn entries(req: &HandleListEntryRequest) -> Result<Vec<String>, String> {
    let config = req
        .adapter_config
        .as_ref()
        .ok_or("the request carries no adapter_config")?;
    let params = prost_types::Struct::decode(config.value.as_slice())
        .map_err(|e| format!("adapter_config is not a Struct: {e}"))?;
    let list = match params.fields.get("entries").and_then(|v| v.kind.as_ref()) {
        Some(prost_types::value::Kind::ListValue(l)) => l,
        _ => return Err("params.entries must be a list".into()),
    };
    Ok(list
        .values
        .iter()
        .filter_map(|v| match &v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .collect())
}

fn text(v: &Wire) -> String {
    match v {
        Wire::StringValue(s) => s.clone(),
        Wire::Int64Value(i) => i.to_string(),
        Wire::DoubleValue(d) => d.to_string(),
        Wire::BoolValue(b) => b.to_string(),
        Wire::IpAddressValue(ip) => match ip.value.len() {
            4 => std::net::Ipv4Addr::from(
                <[u8; 4]>::try_from(ip.value.as_slice()).unwrap_or_default(),
            )
            .to_string(),
            16 => std::net::Ipv6Addr::from(
                <[u8; 16]>::try_from(ip.value.as_slice()).unwrap_or_default(),
            )
            .to_string(),
            _ => String::new(),
        },
        Wire::DnsNameValue(d) => d.value.clone(),
        Wire::EmailAddressValue(e) => e.value.clone(),
        Wire::UriValue(u) => u.value.clone(),
        Wire::TimestampValue(_) | Wire::DurationValue(_) => String::new(),
    }
}

#[tonic::async_trait]
impl HandleListEntryService for ListAdapter {
    async fn handle_list_entry(
        &self,
        request: Request<HandleListEntryRequest>,
    ) -> Result<Response<CheckResult>, tonic::Status> {
        let req = request.into_inner();
        let allowed = entries(&req).map_err(tonic::Status::invalid_argument)?;
        let instance = req.instance.unwrap_or_default();
        let value = instance
            .value
            .and_then(|v| v.value)
            .map(|v| text(&v))
            .unwrap_or_default();
        let (code, message) = if allowed.contains(&value) {
            (0, String::new())
        } else {
            (
                tonic::Code::NotFound as i32,
                format!("{value} is not listed by the out-of-process adapter"),
            )
        };
        Ok(Response::new(CheckResult {
            status: Some(Status {
                code,
                message,
                details: Vec::new(),
            }),
            valid_duration: Some(
                prost_types::Duration::try_from(Duration::from_secs(10)).unwrap_or_default(),
            ),
            valid_use_count: 100,
        }))
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!("list-adapter serving listentry on {}", args.listen);
    let serve = tonic::transport::Server::builder()
        .add_service(HandleListEntryServiceServer::new(ListAdapter))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        );
    if let Err(e) = serve.await {
        eprintln!("list-adapter failed: {e}");
        std::process::exit(1);
    }
}
