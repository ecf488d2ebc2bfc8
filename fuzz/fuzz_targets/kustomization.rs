#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    endstate_core::fuzzing::kustomization(data);
});
