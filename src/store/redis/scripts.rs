//! The Lua scripts, one file each under `lua/`, compiled once (EVALSHA, with
//! EVAL after a Redis restart). Scripts that end sessions get `lib.lua`
//! prepended. Every key a script touches is passed in KEYS.

use ::redis::Script;

const LIB: &str = include_str!("lua/lib.lua");

pub struct Scripts {
    pub create_user: Script,
    pub set_password: Script,
    pub rehash_password: Script,
    pub set_disabled: Script,
    pub delete_user: Script,
    pub release_name: Script,
    pub create_session: Script,
    pub validate: Script,
    pub touch: Script,
    pub end_one: Script,
    pub end_scope: Script,
    pub end_batch: Script,
    pub drain_batch: Script,
    pub pending_done: Script,
    pub pending_upgrade: Script,
    pub lease: Script,
    pub purge_events: Script,
    pub events_after: Script,
    pub record_failure: Script,
    pub count_call: Script,
    pub ssf_add_key: Script,
    pub ssf_create_stream: Script,
    pub ssf_replace_stream: Script,
    pub ssf_delete_stream: Script,
}

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            create_user: Script::new(include_str!("lua/create_user.lua")),
            set_password: Script::new(include_str!("lua/set_password.lua")),
            rehash_password: Script::new(include_str!("lua/rehash_password.lua")),
            set_disabled: with_lib(include_str!("lua/set_disabled.lua")),
            delete_user: Script::new(include_str!("lua/delete_user.lua")),
            release_name: Script::new(include_str!("lua/release_name.lua")),
            create_session: with_lib(include_str!("lua/create_session.lua")),
            validate: with_lib(include_str!("lua/validate.lua")),
            touch: Script::new(include_str!("lua/touch.lua")),
            end_one: with_lib(include_str!("lua/end_one.lua")),
            end_scope: with_lib(include_str!("lua/end_scope.lua")),
            end_batch: with_lib(include_str!("lua/end_batch.lua")),
            drain_batch: Script::new(include_str!("lua/drain_batch.lua")),
            pending_done: Script::new(include_str!("lua/pending_done.lua")),
            pending_upgrade: Script::new(include_str!("lua/pending_upgrade.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
            purge_events: Script::new(include_str!("lua/purge_events.lua")),
            events_after: Script::new(include_str!("lua/events_after.lua")),
            record_failure: Script::new(include_str!("lua/record_failure.lua")),
            count_call: Script::new(include_str!("lua/count_call.lua")),
            ssf_add_key: Script::new(include_str!("lua/ssf_add_key.lua")),
            ssf_create_stream: Script::new(include_str!("lua/ssf_create_stream.lua")),
            ssf_replace_stream: Script::new(include_str!("lua/ssf_replace_stream.lua")),
            ssf_delete_stream: Script::new(include_str!("lua/ssf_delete_stream.lua")),
        }
    }
}
