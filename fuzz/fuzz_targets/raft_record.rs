#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrokv_raft::fuzzing::wal_record(data));
