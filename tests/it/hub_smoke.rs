//! Smoke tests: the three sockets say hello, a status change reaches an admin.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn agent_login_and_set_status_reach_admin() {
    let hub = TestHub::start().await;
    let (mut admin, snap) = hub.admin("boss").await;
    assert_eq!(snap["snapshot"]["agents"], json!([]));
    let (mut tab, hello) = hub.agent("a1").await;
    assert_eq!(hello["agent"]["status"], "offline");
    assert_eq!(hello["agent"]["reason"], "login");
    let login = admin.update().await;
    assert_eq!(login["agent"]["agent_id"], "a1");
    assert_eq!(login["agent"]["connections"], 1);
    let ok = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let upd = tab.update().await;
    assert_eq!(upd["agent"]["status"], "available");
    let upd = admin.update().await;
    assert_eq!(upd["agent"]["status"], "available");
    assert_eq!(
        upd["seq"].as_u64(),
        Some(login["seq"].as_u64().unwrap() + 1)
    );
    let mut tel = hub.telephony().await;
    let reply = tel.request(event("call_offered", "c1", "a1")).await;
    assert_eq!(reply["accepted"], true, "{reply}");
    let offered = tab.recv_type("call_offered").await;
    assert_eq!(offered["call"]["call_id"], "c1");
    hub.stop().await;
}
