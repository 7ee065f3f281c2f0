//! A stand-in for the app's autosave loop, for the crash test: opens a store and appends one
//! member name per answer, printing the index of each answer once `set_answer` has returned
//! (i.e. the answer is acknowledged to the user). The test kills this process at random.

use std::io::Write;

use zoufang_core::{Collector, StoreOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(visit), Some(start)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: autosave_writer STORE VISIT START_INDEX".into());
    };
    let start: usize = start.parse()?;
    let collector = Collector::open(path.as_ref(), &StoreOptions::default())?;
    let mut out = std::io::stdout().lock();
    for i in start.. {
        collector.set_answer(
            &visit,
            &format!("members[{i}].name"),
            serde_json::json!(format!("成员{i}")),
        )?;
        writeln!(out, "{i}")?;
        out.flush()?;
    }
    Ok(())
}
