//! Embedding statesync in a router: a primary control unit, a standby and one interface
//! component (client) as three nodes over loopback UDP, each on its own worker thread.
//!
//! Run: `cargo run --release --example router`

use statesync::proto::{ChannelState, ProtoConfig, SectionMask, Topology};
use statesync::runtime::{Change, ClientHandler, NodeConfig, spawn_client, spawn_control_unit};
use statesync::transport::TransportConfig;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The line card: programs its forwarding table from the replicated state.
struct LineCard {
    routes_programmed: u64,
}

impl ClientHandler for LineCard {
    fn on_update(&mut self, _channel: u32, _op: u64, _cookie: u64, _state: &ChannelState) {
        self.routes_programmed += 1;
    }
    fn on_replay(
        &mut self,
        channel: u32,
        sections: SectionMask,
        base_op: u64,
        state: &ChannelState,
    ) {
        println!(
            "line card: channel {channel} reset sections {sections:#x} at op {base_op} ({} routes)",
            state.entry_count(sections)
        );
    }
}

/// Reserves a free loopback port (the nodes must know each other's addresses up front).
fn free_addr() -> SocketAddr {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    s.local_addr().expect("local address")
}

fn main() {
    let (primary, standby, card) = (1, 2, 100);
    let topology = Topology {
        control_units: vec![primary, standby],
        clients: vec![card],
        channel_owner: vec![card; 4],
        submitters: vec![],
    };
    let proto = ProtoConfig::new(topology);
    let addrs = [
        (primary, free_addr()),
        (standby, free_addr()),
        (card, free_addr()),
    ];
    let node = |id| {
        let bind = addrs.iter().find(|(n, _)| *n == id).expect("listed").1;
        NodeConfig {
            id,
            proto: proto.clone(),
            peers: addrs.iter().copied().filter(|(n, _)| *n != id).collect(),
            transport: TransportConfig {
                bind,
                ..Default::default()
            },
            core: None,
            ring_capacity: 4096,
        }
    };
    let mut p = spawn_control_unit(node(primary), true, 0).expect("primary starts");
    let _s = spawn_control_unit(node(standby), true, 0).expect("standby starts");
    let _c = spawn_client(
        node(card),
        false,
        0,
        Box::new(LineCard {
            routes_programmed: 0,
        }),
    )
    .expect("client starts");

    // Install 1,000 routes on 4 channels (interfaces), section = address family / table.
    let n = 1000u64;
    let mut sent = 0;
    while sent < n {
        let prefix = 0x0a00_0000u64 + sent;
        let change = Change::put(
            (sent % 4) as u32,
            (sent % 8) as u8,
            prefix,
            b"next-hop 192.0.2.1",
        )
        .expect("fits inline");
        if p.submit(change).is_ok() {
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_micros(100)); // backpressure: try again shortly
        }
    }
    let start = Instant::now();
    let mut committed = [0u64; 4];
    while committed.iter().sum::<u64>() < n && start.elapsed() < Duration::from_secs(5) {
        while let Some(note) = p.next_commit() {
            committed[note.channel as usize] = note.through;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "committed per channel: {committed:?} in {:?}",
        start.elapsed()
    );
    assert_eq!(committed.iter().sum::<u64>(), n, "every route committed");
}
