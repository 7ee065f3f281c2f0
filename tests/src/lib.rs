//! End-to-end tests live in `tests/tests/`; helper programs they drive live in `src/bin/`.
