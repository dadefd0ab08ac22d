//! The fuzz targets as property tests of the suite: random bytes, and mutations of the valid
//! frames and requests of their corpora. (`cargo xtask fuzz` runs them for millions of cases.)

use proptest::prelude::*;
use wsrelay_fuzz::{connection, decode, upgrade, websocket, CORPUS, FRAMES, REQUESTS};

/// A seed from `corpus` with some bytes overwritten, inserted or cut.
fn mutation(corpus: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    (
        0..corpus.len(),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 0..8),
    )
        .prop_map(move |(index, edits)| {
            let mut data = corpus[index].as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let at = at % (data.len() + 1);
                match kind {
                    0 if at < data.len() => data[at] = byte,
                    1 => data.insert(at, byte),
                    _ => data.truncate(at.max(1)),
                }
            }
            data
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn frames_from_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        decode(&data);
    }

    #[test]
    fn frames_from_mutated_valid_ones(data in mutation(CORPUS)) {
        decode(&data);
    }

    #[test]
    fn a_server_connection_under_random_programs(data in prop::collection::vec(any::<u8>(), 0..400)) {
        connection(&data);
    }

    #[test]
    fn websocket_frames_from_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        websocket(&data);
    }

    #[test]
    fn websocket_frames_mutated(
        seeds in prop::collection::vec(0..FRAMES.len(), 1..5),
        pieces in any::<u8>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let mut data = vec![pieces];
        for seed in seeds {
            data.extend_from_slice(FRAMES[seed]);
        }
        for (at, bits) in edits {
            let at = 1 + at % (data.len() - 1);
            data[at] ^= bits;
        }
        websocket(&data);
    }

    #[test]
    fn upgrade_requests_from_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        upgrade(&data);
    }

    #[test]
    fn upgrade_requests_mutated(data in mutation(REQUESTS)) {
        upgrade(&data);
    }
}

#[test]
fn the_corpora_are_what_they_say() {
    // The seeds exercise the paths: most frames decode, the requests parse.
    let decoded = CORPUS
        .iter()
        .filter(|text| wsrelay_core::protocol::Frame::decode(text).is_ok())
        .count();
    assert!(decoded >= CORPUS.len() - 2, "{decoded} of {}", CORPUS.len());
    for request in REQUESTS {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let parsed = httparse::Request::new(&mut headers).parse(request.as_bytes());
        assert!(
            matches!(parsed, Ok(httparse::Status::Complete(_))),
            "{request}"
        );
    }
}

#[test]
fn the_frames_seeds_are_valid_client_frames() {
    use wsrelay_core::server::websocket::Decoder;
    for (index, seed) in FRAMES.iter().enumerate() {
        let mut input = seed.to_vec();
        let mut decoder = Decoder::new(1 << 16);
        let mut messages = 0;
        while let Ok((used, Some(_))) = decoder.decode(&mut input) {
            input.drain(..used);
            messages += 1;
        }
        assert!(messages > 0, "seed {index} decodes to nothing");
        assert!(
            decoder.decode(&mut input).is_ok(),
            "seed {index} ends in an error"
        );
    }
}
