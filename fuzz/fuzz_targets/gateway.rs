#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrokv_wire::fuzzing::gateway(data));
