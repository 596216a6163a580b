//! Integration tests: one binary so the suite links once.
