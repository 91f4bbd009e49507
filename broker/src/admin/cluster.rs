//! `skiff cluster info`: the cluster id, the controller and the brokers, from Metadata.

use super::client::{BrokerInfo, Client};
use super::output::{or_dash, show, Table};
use super::{ClientArgs, Outcome};
use serde::Serialize;

#[derive(Serialize)]
struct ClusterInfo {
    cluster_id: Option<String>,
    controller_id: i32,
    brokers: Vec<BrokerInfo>,
    topics: usize,
}

pub async fn info(args: &ClientArgs) -> Outcome {
    let mut client = Client::connect(args).await?;
    let metadata = client.metadata(None).await?;
    let info = ClusterInfo {
        cluster_id: metadata.cluster_id.as_ref().map(|c| c.to_string()),
        controller_id: metadata.controller_id.0,
        brokers: client.brokers().cloned().collect(),
        topics: metadata.topics.len(),
    };
    show(args.output, &info, |info| {
        println!("CLUSTER     {}", or_dash(info.cluster_id.as_ref()));
        println!("CONTROLLER  {}", info.controller_id);
        println!("TOPICS      {}", info.topics);
        println!();
        let mut table = Table::new(&["ID", "HOST", "PORT", "RACK"]);
        for b in &info.brokers {
            let id = if b.node_id == info.controller_id {
                format!("{}*", b.node_id)
            } else {
                b.node_id.to_string()
            };
            table.row([
                id,
                b.host.clone(),
                b.port.to_string(),
                or_dash(b.rack.as_ref()),
            ]);
        }
        table.print();
    })?;
    Ok(true)
}
