#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrokv_shards::record::fuzzing::decode(data));
