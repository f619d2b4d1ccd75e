def test_login_returns_tokens_and_session(logged_in):
    api, body = logged_in
    assert body["session_id"]
    me = api.get("/api/auth/me")
    assert me.status_code == 200, me.content
    assert me.json()["session_id"] == body["session_id"]
