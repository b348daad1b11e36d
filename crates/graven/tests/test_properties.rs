//! Property tests for every parser of untrusted or hand-written input: the
//! Procfile, `graven.toml`, dotenv files, listings and artifact records.
//! Arbitrary input never panics, and is either parsed or refused with an
//! error located inside the input; canonical objects round-trip byte for
//! byte, and no other bytes parse.

use std::collections::BTreeMap;

use graven::Digest;
use graven::app::{AppSettings, ImageSettings, Position, Procfile, RunSettings};
use graven::model::manifest::{Entry, EntryKind, Listing, name_problem};
use graven::model::{ARTIFACT_FORMAT, Artifact};
use graven::release::dotenv;
use proptest::prelude::*;

/// Text that looks enough like the formats to reach deep into the parsers:
/// their punctuation, quotes, escapes, line ends and non-ASCII.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_A-Z0-9 \\t\\r\\n:=#\"'\\\\$\\[\\]{}.,\\-é€\u{feff}]{0,160}",
        "([a-z]{1,6}[ ]?[:=][ ]?[a-z'\"\\\\ $#]{0,12}\\r?\\n){0,8}",
        "(\\[(app|build|run)\\]\\n([a-z_]{1,10} = (\"[a-z/ .]{0,8}\"|[0-9]{1,6}|\\[\"[a-z]{0,4}\"\\]|true)\\n){0,4}){0,3}",
    ]
}

/// A located error's position is inside the text: its line exists (or is
/// the one just past the end), its column is at least 1.
fn assert_inside(text: &str, position: Position) {
    let lines = text.split('\n').count();
    assert!(position.line >= 1 && position.line <= lines + 1, "line {} of {lines}: {text:?}", position.line);
    assert!(position.column >= 1, "column {}: {text:?}", position.column);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn procfiles_parse_or_are_refused_with_a_position(text in texty()) {
        if let Err(error) = Procfile::parse(&text) {
            assert_inside(&text, error.position);
        }
    }

    #[test]
    fn settings_parse_or_are_refused_with_a_position(text in texty()) {
        if let Err(error) = AppSettings::parse(&text) {
            assert_inside(&text, error.position);
        }
    }

    #[test]
    fn dotenv_files_parse_or_are_refused_with_a_position(text in texty()) {
        match dotenv::parse(&text) {
            Ok(pairs) => {
                for (key, value) in pairs {
                    prop_assert!(graven::app::is_variable_name(&key), "{key:?}");
                    prop_assert!(!value.contains('\0'));
                }
            }
            Err(error) => assert_inside(&text, error.position),
        }
    }

    #[test]
    fn arbitrary_bytes_never_pass_as_a_listing_unless_canonical(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let digest = Digest::of(&bytes);
        if let Ok(listing) = Listing::parse(&bytes, &digest) {
            prop_assert_eq!(&listing.to_canonical_json(), &bytes);
        }
        if let Ok(artifact) = Artifact::parse(&bytes, &digest) {
            prop_assert_eq!(artifact.to_canonical_json(), bytes);
        }
    }

    #[test]
    fn canonical_listings_round_trip_and_every_changed_byte_is_refused_or_canonical(
        listing in listings(),
        flip in any::<prop::sample::Index>(),
        to in any::<u8>(),
    ) {
        let bytes = listing.to_canonical_json();
        let parsed = Listing::parse(&bytes, &Digest::of(&bytes)).expect("a canonical listing parses");
        prop_assert_eq!(&parsed, &listing);
        prop_assert_eq!(parsed.to_canonical_json(), bytes.clone());
        prop_assert!(Listing::parse(&bytes, &Digest::of(b"another name")).is_err(), "a listing under another name");

        let mut changed = bytes;
        let at = flip.index(changed.len());
        changed[at] = to;
        if let Ok(listing) = Listing::parse(&changed, &Digest::of(&changed)) {
            prop_assert_eq!(listing.to_canonical_json(), changed);
        }
    }

    #[test]
    fn canonical_artifact_records_round_trip(artifact in artifacts()) {
        let bytes = artifact.to_canonical_json();
        let parsed = Artifact::parse(&bytes, &artifact.id()).expect("a canonical record parses");
        prop_assert_eq!(parsed, artifact);
    }
}

fn names() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9._\\- ]{1,24}", "[^/\0]{1,12}", Just("..a".to_owned()), Just("a\u{feff}é".to_owned())]
        .prop_filter("a valid name", |name| name_problem(name).is_none())
}

fn kinds() -> impl Strategy<Value = EntryKind> {
    prop_oneof![
        (any::<bool>(), any::<u64>(), any::<[u8; 4]>()).prop_map(|(executable, size, seed)| EntryKind::File {
            executable,
            size,
            digest: Digest::of(&seed)
        }),
        any::<[u8; 4]>().prop_map(|seed| EntryKind::Dir { tree: Digest::of(&seed) }),
        "[^\0]{1,40}".prop_map(|target| EntryKind::Symlink { target }),
    ]
}

fn listings() -> impl Strategy<Value = Listing> {
    prop::collection::btree_map(names(), kinds(), 0..12)
        .prop_map(|entries| Listing { entries: entries.into_iter().map(|(name, kind)| Entry { name, kind }).collect() })
}

fn artifacts() -> impl Strategy<Value = Artifact> {
    (
        prop::collection::btree_map("[a-z0-9_\\-]{1,20}", "[!-~][^\0]{0,30}", 0..6),
        any::<[u8; 4]>(),
        prop::option::of("/[!-~]{0,20}"),
        prop::option::of(any::<u16>()),
        prop::collection::vec("[a-z]{1,8}", 0..3),
    )
        .prop_map(
            |(process_types, seed, health, port, layers): (BTreeMap<String, String>, _, _, _, Vec<String>)| Artifact {
                format: ARTIFACT_FORMAT,
                // Distinct, so that they pass the check on load.
                image: ImageSettings {
                    layers: layers.into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
                },
                process_types,
                root: Digest::of(&seed),
                run: RunSettings { health, port, ..RunSettings::default() },
            },
        )
}
