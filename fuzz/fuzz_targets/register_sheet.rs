#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yunjian_fuzz::register_sheet(data));
