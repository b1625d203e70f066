#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferrokv_ctl::snapshot_file::status(data);
});
