//! A sync's cost follows what it carries, not the store's history. A coordinator who has
//! worked a village for years (its roll of households with their members, every change
//! acknowledged, every household opened three times, the whole audit trail uploaded) records one visit and syncs: SQLite reads no
//! more rows for it than for the same visit on a phone enrolled yesterday. Rows read are
//! counted by SQLite itself (`Collector::measure_sql`: VM steps, and the rows stepped through
//! by full scans), so the test does not depend on the machine's speed.
//!
//! `ZOUFANG_HISTORY_HOUSEHOLDS` sets the history's size: 2,500 households by default (10,000
//! changes, 10,000 audit entries: what an unoptimised test build makes in about 20 s); 25,000
//! gives the 100,000 of each the issue names. The counts compared do not depend on it: lookups
//! by key cost the same at any size, and the scans that made a sync grow are gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use zoufang_core::Collector;
use zoufang_core::protocol::messages::Role;
use zoufang_core::records::NewHousehold;
use zoufang_core::store::stats::SqlStats;

use zoufang_tests::{Device, TestServer, obj, routine_visit};

const OLD_VILLAGE: &str = "513431104201";
const NEW_VILLAGE: &str = "513431104202";

/// A resident ID of Zhaojue county with a valid check digit (GB 11643).
fn resident_id(n: u64) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let year = 1940 + n % 60;
    let day_of_year = (n / 60) % 336;
    let month = 1 + day_of_year / 28;
    let day = 1 + day_of_year % 28;
    let serial = (n / (60 * 336)) % 1000;
    let body = format!("513431{year}{month:02}{day:02}{serial:03}");
    let sum: u32 = body
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    let check = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    format!("{body}{}", check.get((sum % 11) as usize).unwrap_or(&'0'))
}

/// A household of three: head, spouse, child, as a roll import gives them.
fn household(village: &str, i: u64) -> NewHousehold {
    let member = |k: u64, name: &str, relationship: &str| {
        obj(
            json!({"name": name, "id_type": "resident_id", "id_number": resident_id(i * 3 + k),
                   "relationship": relationship, "lives_together": "yes", "health": "healthy"}),
        )
    };
    NewHousehold {
        village_code: village.into(),
        fields: obj(
            json!({"phone": format!("138{:08}", i), "urban_rural": "rural", "address": "三组",
                           "next_visit_due": "2027-03-01"}),
        ),
        members: vec![
            member(0, "吉克阿呷", "02"),
            member(1, "马海木呷", "10"),
            member(2, "吉克石布", "20"),
        ],
    }
}

fn history_households() -> u64 {
    std::env::var("ZOUFANG_HISTORY_HOUSEHOLDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_500)
}

/// One routine visit and a corrected phone number, then a sync, counted.
fn small_sync(server: &TestServer, c: &Collector, household: &str) -> SqlStats {
    routine_visit(c, household);
    c.edit_household_field(household, "phone", json!("13900000007"))
        .unwrap();
    let (report, stats) = c.measure_sql(|| c.sync(&server.transport(), None, None));
    let report = report.unwrap();
    // The visit, the household's next due date it sets, the phone number.
    assert_eq!((report.pushed, report.accepted), (3, 3), "{report:?}");
    stats
}

fn describe(stats: &SqlStats) -> String {
    let scans: Vec<String> = stats
        .scans()
        .iter()
        .take(8)
        .map(|(sql, rows)| {
            format!(
                "  {rows:>8} rows: {}",
                sql.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    format!(
        "{} statements, {} VM steps, {} rows by full scans\n{}",
        stats.runs(),
        stats.vm_steps(),
        stats.fullscan_steps(),
        scans.join("\n")
    )
}

#[test]
fn a_small_sync_reads_no_more_rows_after_years_of_history() {
    let server = TestServer::start();

    // Enrolled yesterday: one household, synced once.
    let fresh = Device::enrolled(&server, "coord-new", Role::Coordinator, &[NEW_VILLAGE]);
    let c = &fresh.collector;
    let home = c
        .import_households(vec![household(NEW_VILLAGE, 0)])
        .unwrap();
    c.sync(&server.transport(), None, None).unwrap();
    let fresh_stats = small_sync(&server, c, home.first().unwrap());

    // Years of work: a village's roll, every change acknowledged, every household opened
    // three times, the whole trail uploaded.
    let n = history_households();
    let old = Device::enrolled(&server, "coord-old", Role::Coordinator, &[OLD_VILLAGE]);
    let c = &old.collector;
    let homes = c
        .import_households((1..=n).map(|i| household(OLD_VILLAGE, i)).collect())
        .unwrap();
    for _ in 0..3 {
        for id in &homes {
            c.household(id).unwrap();
        }
    }
    let first = c.sync(&server.transport(), None, None).unwrap();
    assert_eq!(first.accepted, 4 * n, "{first:?}");
    assert_eq!(c.sync_status().unwrap().pending_changes, 0);
    // All but the entry recording that sync, which goes up with the next.
    assert_eq!(c.pending_audit_count().unwrap(), 1);
    assert!(first.audit_uploaded >= 4 * n, "{first:?}");
    let old_stats = small_sync(&server, c, homes.first().unwrap());

    let report = format!(
        "fresh store: {}\nafter {n} households of history: {}",
        describe(&fresh_stats),
        describe(&old_stats)
    );
    eprintln!("{report}");
    // Lookups by key cost the same at any size; only a scan grows with the table.
    assert!(
        old_stats.fullscan_steps() <= fresh_stats.fullscan_steps() + 50,
        "{report}"
    );
    assert!(
        old_stats.vm_steps() <= fresh_stats.vm_steps() * 3 / 2 + 2_000,
        "{report}"
    );
}
