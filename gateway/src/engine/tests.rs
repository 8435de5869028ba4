use serde_json::json;
use understudy_crds::model::{ConfigSource, ScenarioConfig, TenantConfig};
use understudy_crds::{MatchMode, ScenarioSpec};

use super::*;

fn scenario(id: &str, keywords: &[&str], response: &str) -> ScenarioConfig {
    ScenarioConfig {
        id: id.into(),
        spec: ScenarioSpec {
            tenant_ref: "t".into(),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            response: response.into(),
            ..Default::default()
        },
    }
}

fn tenant(scenarios: Vec<ScenarioConfig>) -> TenantRuntime {
    TenantRuntime::new(
        TenantConfig {
            tenant_id: "t".into(),
            visibility: Default::default(),
            owner: None,
            state: json!({}),
            settings: json!({"max_tool_results": 2}),
            default_response: None,
            scenarios,
            chaos: None,
            source: ConfigSource::Api,
            origin: String::new(),
        },
        1,
    )
}

fn ask(text: &str) -> Conversation {
    Conversation {
        last_user_text: Some(text.into()),
        user_turns: 1,
        ..Default::default()
    }
}

fn text_of(d: Decision) -> String {
    match d {
        Decision::Text { text, .. } => text,
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn keywords_match_case_insensitively_as_substrings() {
    let t = tenant(vec![scenario("a", &["Invoice"], "A")]);
    assert_eq!(text_of(decide(&t, &ask("my INVOICES please"))), "A");
}

#[test]
fn no_match_gives_the_fallback_naming_the_tenant_or_the_default_response() {
    let mut t = tenant(vec![scenario("a", &["x"], "A")]);
    assert!(text_of(decide(&t, &ask("nothing"))).contains("'t'"));
    t.config.default_response = Some("Default".into());
    assert_eq!(text_of(decide(&t, &ask("nothing"))), "Default");
}

#[test]
fn priority_then_turn_then_keyword_count_then_order() {
    let mut low = scenario("low", &["refund"], "low");
    low.spec.priority = 0;
    let mut high = scenario("high", &["refund"], "high");
    high.spec.priority = 5;
    let t = tenant(vec![low.clone(), high]);
    assert_eq!(text_of(decide(&t, &ask("refund"))), "high");

    let mut turn = scenario("turn", &["refund"], "turn-2");
    turn.spec.turn = Some(2);
    let t = tenant(vec![low.clone(), turn]);
    let mut conv = ask("refund");
    assert_eq!(
        text_of(decide(&t, &conv)),
        "low",
        "turn 2 scenario does not apply at turn 1"
    );
    conv.user_turns = 2;
    assert_eq!(
        text_of(decide(&t, &conv)),
        "turn-2",
        "a matching turn wins over no turn"
    );

    let two = scenario("two", &["refund", "urgent"], "two");
    let t = tenant(vec![low.clone(), two]);
    assert_eq!(
        text_of(decide(&t, &ask("urgent refund"))),
        "two",
        "more distinct keywords win"
    );

    let t = tenant(vec![
        scenario("first", &["refund"], "first"),
        scenario("second", &["refund"], "second"),
    ]);
    assert_eq!(
        text_of(decide(&t, &ask("refund"))),
        "first",
        "earliest wins a full tie"
    );
}

#[test]
fn match_all_needs_every_keyword_and_empty_keywords_never_match() {
    let mut all = scenario("all", &["refund", "urgent"], "all");
    all.spec.match_mode = MatchMode::All;
    let t = tenant(vec![all, scenario("tool-only", &[], "never")]);
    assert!(text_of(decide(&t, &ask("refund"))).contains("no scenario"));
    assert_eq!(text_of(decide(&t, &ask("urgent refund"))), "all");
}

#[test]
fn response_json_is_serialised() {
    let mut s = scenario("j", &["summary"], "ignored");
    s.spec.response_json = Some(json!({"a": 1}));
    let t = tenant(vec![s]);
    assert_eq!(text_of(decide(&t, &ask("summary"))), "{\"a\":1}");
}

fn tool_tenant() -> TenantRuntime {
    let mut s = scenario("w", &["weather"], "Sunny");
    s.spec.tool_name = Some("get_weather".into());
    s.spec.tool_arguments = Some(json!({"city": "Paris"}));
    let mut other = scenario("o", &["stock"], "Up");
    other.spec.tool_name = Some("get_stock".into());
    tenant(vec![s, other])
}

#[test]
fn offered_tool_is_called_then_its_result_gives_the_response() {
    let t = tool_tenant();
    let mut conv = ask("weather in Paris?");
    conv.offered_tools = vec!["get_weather".into()];
    assert_eq!(
        decide(&t, &conv),
        Decision::ToolCall {
            name: "get_weather".into(),
            arguments: json!({"city": "Paris"}),
            scenario: 0
        }
    );
    conv.tool_results = 1;
    conv.answered_tools = vec![Some("get_weather".into())];
    assert_eq!(text_of(decide(&t, &conv)), "Sunny");
}

#[test]
fn tool_not_offered_or_choice_none_answers_text() {
    let t = tool_tenant();
    let mut conv = ask("weather");
    conv.offered_tools = vec!["something_else".into()];
    assert_eq!(text_of(decide(&t, &conv)), "Sunny");
    conv.offered_tools = vec!["get_weather".into()];
    conv.tool_choice = ToolChoice::None;
    assert_eq!(text_of(decide(&t, &conv)), "Sunny");
}

#[test]
fn named_and_required_tool_choice_force_a_call() {
    let t = tool_tenant();
    let mut conv = ask("hello");
    conv.offered_tools = vec!["get_weather".into(), "get_stock".into()];
    conv.tool_choice = ToolChoice::Named("get_stock".into());
    assert!(
        matches!(decide(&t, &conv), Decision::ToolCall { ref name, .. } if name == "get_stock")
    );
    conv.tool_choice = ToolChoice::Required;
    assert!(
        matches!(decide(&t, &conv), Decision::ToolCall { ref name, .. } if name == "get_weather")
    );
}

#[test]
fn loop_guard_stops_calls_after_max_tool_results() {
    let t = tool_tenant(); // max_tool_results: 2
    let mut conv = ask("weather");
    conv.offered_tools = vec!["get_weather".into()];
    conv.tool_choice = ToolChoice::Required;
    conv.tool_results = 2;
    assert_eq!(text_of(decide(&t, &conv)), "Sunny");
}

#[test]
fn tokens_are_estimated_and_truncated_on_character_boundaries() {
    assert_eq!(tokens::estimate(0), 0);
    assert_eq!(tokens::estimate(1), 1);
    assert_eq!(tokens::estimate(8), 2);
    assert_eq!(tokens::estimate(9), 3);
    assert_eq!(
        tokens::truncate("héllo wörld".to_string(), Some(1)),
        ("héll".to_string(), true)
    );
    assert_eq!(
        tokens::truncate("abc".to_string(), Some(1)),
        ("abc".to_string(), false)
    );
}

#[test]
fn embeddings_are_deterministic_unit_vectors() {
    let a = embed::embedding("hello", 64);
    assert_eq!(a, embed::embedding("hello", 64));
    assert_ne!(a, embed::embedding("hello!", 64));
    let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn settings_fall_back_on_bad_values_and_keep_good_ones() {
    let s = settings::Settings::from_value(&json!({
        "stream_chunk_chars": 0, "stream_ttft_ms": 20, "models": ["m1"], "embedding_dimensions": 99999, "other": 1
    }));
    assert_eq!(s.stream_chunk_chars, 4);
    assert_eq!(s.stream_ttft_ms, 20);
    assert_eq!(s.models, vec!["m1".to_string()]);
    assert_eq!(s.embedding_dimensions, 1536);
    assert!(s.paced());
}

#[test]
fn a_tool_answered_earlier_in_the_conversation_is_not_called_again() {
    let t = tool_tenant();
    let mut conv = ask("weather again, please"); // a later turn
    conv.user_turns = 2;
    conv.offered_tools = vec!["get_weather".into()];
    conv.tool_results = 1;
    conv.answered_tools = vec![Some("get_weather".into())];
    assert_eq!(
        text_of(decide(&t, &conv)),
        "Sunny",
        "SPEC §3.3: a result for it is in the conversation"
    );
}

#[test]
fn answer_applies_max_tokens_and_counts_tokens_without_http() {
    let t = tenant(vec![scenario("a", &["refund"], "Refunds take five days.")]);
    let mut conv = ask("a refund please");
    conv.input_chars = 15;
    let full = answer(&t, &conv, None);
    assert_eq!(full.text.as_str(), "Refunds take five days.");
    assert_eq!(full.stop, Stop::Complete);
    assert_eq!(full.scenario, Some(0));
    assert_eq!((full.input_tokens, full.output_tokens), (4, 6));
    let cut = answer(&t, &conv, Some(2));
    assert_eq!(cut.text.as_str(), "Refunds ");
    assert!(cut.truncated());
    assert_eq!(cut.output_tokens, 2);
    let none = answer(&t, &ask("unrelated"), None);
    assert_eq!((none.scenario, none.input_tokens), (None, 1));
}

#[test]
fn a_tool_call_answer_carries_its_arguments_both_ways() {
    let mut s = scenario("a", &["balance"], "");
    s.spec.tool_name = Some("get_balance".into());
    s.spec.tool_arguments = Some(json!({"account": "main"}));
    let t = tenant(vec![s]);
    let mut conv = ask("my balance");
    conv.offered_tools = vec!["get_balance".into()];
    let a = answer(&t, &conv, Some(1));
    assert_eq!(a.stop, Stop::ToolCall);
    let call = a.call.expect("a tool call");
    assert_eq!(call.arguments, json!({"account": "main"}));
    assert_eq!(call.arguments_json, r#"{"account":"main"}"#);
    assert!(a.text.is_empty());
    assert_eq!(a.output_tokens, tokens::estimate(18 + 11));
}
