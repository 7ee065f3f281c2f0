//! A device process for the kill test: opens a store and syncs it through a server URL,
//! printing the attachment phase's progress (`attachments DONE TOTAL`, bytes the server
//! confirmed) as it goes.
#![allow(clippy::expect_used, clippy::print_stdout)]

use std::io::Write;

use zoufang_core::sync::{ReqwestTransport, SyncListener, SyncPhase, SyncProgress};
use zoufang_core::{Collector, StoreOptions};

struct Print;

impl SyncListener for Print {
    fn on_progress(&self, p: SyncProgress) {
        if p.phase == SyncPhase::Attachments {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "attachments {} {}", p.done, p.total);
            let _ = out.flush();
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("store path");
    let url = args.next().expect("server URL");
    let c = Collector::open(std::path::Path::new(&path), &StoreOptions::default()).expect("store");
    let transport = ReqwestTransport::new(&url).expect("transport");
    c.sync(&transport, Some(&Print), None).expect("sync");
    println!("done");
}
