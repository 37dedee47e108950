//! `istio.mixer.v1.Mixer/Report`: batches of compressed attribute sets,
//! each decoded on its own (INDEPENDENT_ENCODING, with the request's
//! `default_words` for sets that bring no words, as Istio's proxy sent) or
//! over the set before it (DELTA_ENCODING). A batch with one bad set is
//! refused whole with INVALID_ARGUMENT naming the set; an accepted batch is
//! queued for the adapters. Check is mixer-policy's.

use api::mixer::report_request::RepeatedAttributesSemantics;
use api::mixer::{CheckResponse, ReportResponse};
use api::mixer_wire::{CheckRequest, ReportRequest, mixer_server};
use mixer::attribute::compressed::{self, Raw, Words};
use mixer::attribute::{Bag, Vocabulary};
use tonic::{Request, Response, Status};

use super::Telemetry;
use crate::ingest::Batch;
use crate::metrics::ApiLabel;

/// Most attribute sets one Report may carry (Istio's proxy batched 100).
pub const MAX_BATCH: usize = 10_000;

#[tonic::async_trait]
impl mixer_server::Mixer for Telemetry {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Err(Status::unimplemented(
            "mixer-telemetry answers Report; Check is mixer-policy's (istio-policy)",
        ))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let req = request.into_inner();
        let snapshot = self.dispatcher.snapshot();
        match decode(&req, &snapshot.vocabulary) {
            Ok((bags, undeclared)) => {
                self.metrics.undeclared_attributes.inc_by(undeclared);
                if !bags.is_empty() {
                    self.ingest.submit(Batch { api: "mixer", bags });
                }
                Ok(Response::new(ReportResponse {}))
            }
            Err(e) => {
                self.metrics
                    .bad_requests
                    .get_or_create(&ApiLabel { api: "mixer" })
                    .inc();
                Err(Status::invalid_argument(e))
            }
        }
    }
}

/// The request's attribute sets as bags, and how many undeclared attributes
/// were dropped.
pub fn decode(req: &ReportRequest, vocab: &Vocabulary) -> Result<(Vec<Bag>, u64), String> {
    if req.attributes.len() > MAX_BATCH {
        return Err(format!(
            "attributes: {} sets in one report, over the limit of {MAX_BATCH}",
            req.attributes.len()
        ));
    }
    let delta = match RepeatedAttributesSemantics::try_from(req.repeated_attributes_semantics) {
        Ok(RepeatedAttributesSemantics::DeltaEncoding) => true,
        Ok(RepeatedAttributesSemantics::IndependentEncoding) => false,
        Err(_) => {
            return Err(format!(
                "repeated_attributes_semantics: unknown value {}",
                req.repeated_attributes_semantics
            ));
        }
    };
    let default_words: Vec<&str> = req.default_words.iter().map(String::as_str).collect();
    let mut bags: Vec<Bag> = Vec::with_capacity(req.attributes.len());
    let mut undeclared = 0;
    for (i, set) in req.attributes.iter().enumerate() {
        let decoded = Raw::parse(set).and_then(|raw| {
            let local = if raw.words().is_empty() {
                &default_words
            } else {
                raw.words()
            };
            let words = Words::new(req.global_word_count, local)?;
            let mut bag = match bags.last() {
                Some(previous) if delta => previous.clone(),
                _ => Bag::for_vocabulary(vocab),
            };
            compressed::decode(&raw, &words, vocab, &mut bag).map(|stats| (bag, stats))
        });
        let (bag, stats) = decoded.map_err(|e| format!("attributes[{i}]: {e}"))?;
        undeclared += u64::from(stats.undeclared);
        bags.push(bag);
    }
    Ok((bags, undeclared))
}

#[cfg(test)]
mod tests {
    use api::mixer::CompressedAttributes;
    use mixer::attribute::Value;
    use mixer::attribute::dictionary::index_of;
    use prost::Message;

    use super::*;

    fn set(strings: &[(i32, i32)], int64s: &[(i32, i64)], words: &[&str]) -> CompressedAttributes {
        CompressedAttributes {
            strings: strings.iter().copied().collect(),
            int64s: int64s.iter().copied().collect(),
            words: words.iter().map(|w| w.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The request as mixer-telemetry reads it off the wire.
    fn wire(req: api::mixer::ReportRequest) -> ReportRequest {
        ReportRequest::decode(req.encode_to_vec().as_slice()).unwrap()
    }

    fn g(word: &str) -> i32 {
        index_of(word).unwrap()
    }

    #[test]
    fn independent_sets_use_the_default_words_when_they_bring_none() {
        let req = wire(api::mixer::ReportRequest {
            attributes: vec![
                set(
                    &[(g("destination.service.host"), -1)],
                    &[(g("response.code"), 200)],
                    &[],
                ),
                set(
                    &[(g("destination.service.host"), -1)],
                    &[],
                    &["own.default.svc.cluster.local"],
                ),
            ],
            default_words: vec!["reviews.default.svc.cluster.local".into()],
            global_word_count: 0,
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
        });
        let (bags, _) = decode(&req, &Vocabulary::standard()).unwrap();
        let host = |b: &Bag| b.get("destination.service.host").unwrap().to_string();
        assert_eq!(host(&bags[0]), "reviews.default.svc.cluster.local");
        assert_eq!(host(&bags[1]), "own.default.svc.cluster.local");
        assert_eq!(
            bags[1].get("response.code"),
            None,
            "independent: nothing carried over"
        );
    }

    #[test]
    fn delta_sets_change_the_one_before() {
        let req = wire(api::mixer::ReportRequest {
            attributes: vec![
                set(
                    &[(g("request.path"), -1)],
                    &[(g("response.code"), 200)],
                    &["/a"],
                ),
                set(&[], &[(g("response.code"), 503)], &[]),
            ],
            repeated_attributes_semantics: RepeatedAttributesSemantics::DeltaEncoding as i32,
            ..Default::default()
        });
        let (bags, _) = decode(&req, &Vocabulary::standard()).unwrap();
        assert_eq!(bags[1].get("request.path"), Some(&Value::string("/a")));
        assert_eq!(bags[1].get("response.code"), Some(&Value::Int64(503)));
        assert_eq!(bags[0].get("response.code"), Some(&Value::Int64(200)));
    }

    #[test]
    fn a_bad_set_refuses_the_batch_naming_it() {
        let req = wire(api::mixer::ReportRequest {
            attributes: vec![
                set(&[], &[(g("response.code"), 200)], &[]),
                set(&[(g("request.path"), -3)], &[], &["/a"]),
            ],
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
            ..Default::default()
        });
        let err = decode(&req, &Vocabulary::standard()).unwrap_err();
        assert_eq!(
            err,
            "attributes[1]: strings entry: value: word index -3 is out of range: the message has 1 words"
        );
        // An empty set is fine; a set whose framing is broken is not.
        let req = ReportRequest {
            attributes: vec![Default::default(), vec![0x12, 9, 1].into()],
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
            ..Default::default()
        };
        assert_eq!(
            decode(&req, &Vocabulary::standard()).unwrap_err(),
            "attributes[1]: the attributes are not valid protobuf: field 2: 9 bytes announced, 1 left in the message"
        );
        let req = wire(api::mixer::ReportRequest {
            repeated_attributes_semantics: 7,
            ..Default::default()
        });
        assert!(
            decode(&req, &Vocabulary::standard())
                .unwrap_err()
                .starts_with("repeated_attributes_semantics")
        );
    }
}
