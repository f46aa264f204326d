//! The admin console: accounts (add, delete, role, password reset, quota) and the audit
//! log, on the running server. Each page and change is one `Request::Admin`, which the
//! one authorisation function refuses to anyone but an admin; this module only
//! translates.

use super::pages::{dates, human_size, render};
use super::{Peer, Web};
use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use shelf_protocol::{AdminRequest, ErrorCode, Request, Response as Answer, Role, WireError};
use std::sync::Arc;

/// Audit entries shown.
const AUDIT_LINES: u32 = 200;

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::User => "user",
        Role::Viewer => "viewer",
    }
}

fn role_of(s: &str) -> Result<Role, WireError> {
    match s {
        "admin" => Ok(Role::Admin),
        "user" => Ok(Role::User),
        "viewer" => Ok(Role::Viewer),
        _ => Err(ErrorCode::InvalidArgument.into()),
    }
}

struct UserRow {
    name: String,
    role: String,
    stored: String,
    quota: String,
}

struct AuditRow {
    at: String,
    what: String,
    user: String,
    from: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    user: String,
    csrf: String,
    roles: Vec<String>,
    users: Vec<UserRow>,
    audit: Vec<AuditRow>,
}

pub async fn page(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let got = super::page_data(&web, peer, &headers, move |w, s| {
        let users = match s.call(&w.store, Request::Admin(AdminRequest::ListUsers))? {
            Answer::Users(u) => u,
            _ => return Err(ErrorCode::Internal.into()),
        };
        let audit = match s.call(
            &w.store,
            Request::Admin(AdminRequest::Audit { limit: AUDIT_LINES }),
        )? {
            Answer::Audit(a) => a,
            _ => return Err(ErrorCode::Internal.into()),
        };
        Ok((users, audit))
    })
    .await;
    let (session, (users, audit)) = match got {
        Ok(x) => x,
        Err(r) => return r,
    };
    render(&AdminPage {
        user: session.user.clone(),
        csrf: web.sessions.csrf(&session),
        roles: vec!["admin".into(), "user".into(), "viewer".into()],
        users: users
            .into_iter()
            .map(|u| UserRow {
                role: role_name(u.role).to_string(),
                stored: human_size(u.stored_bytes),
                quota: u.quota.map(human_size).unwrap_or_else(|| "none".into()),
                name: u.name,
            })
            .collect(),
        audit: audit
            .into_iter()
            .rev()
            .map(|a| AuditRow {
                at: dates(a.at.secs).0,
                what: a.what,
                user: a.user,
                from: a.from,
                detail: a.detail,
            })
            .collect(),
    })
}

/// One change from the console.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add {
        name: String,
        password: String,
        role: String,
    },
    Delete {
        name: String,
    },
    Role {
        name: String,
        role: String,
    },
    Password {
        name: String,
        password: String,
    },
    Quota {
        name: String,
        gib: Option<f64>,
    },
}

fn request(op: Op) -> Result<AdminRequest, WireError> {
    Ok(match op {
        Op::Add {
            name,
            password,
            role,
        } => AdminRequest::AddUser {
            name,
            password,
            role: role_of(&role)?,
        },
        Op::Delete { name } => AdminRequest::DeleteUser { name },
        Op::Role { name, role } => AdminRequest::SetRole {
            name,
            role: role_of(&role)?,
        },
        Op::Password { name, password } => AdminRequest::SetPassword { name, password },
        Op::Quota { name, gib } => AdminRequest::SetQuota {
            name,
            bytes: match gib {
                None => None,
                Some(g) if g.is_finite() && g >= 0.0 => Some((g * (1u64 << 30) as f64) as u64),
                Some(_) => return Err(ErrorCode::InvalidArgument.into()),
            },
        },
    })
}

/// `POST /api/admin`.
pub async fn change(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(op): Json<Op>,
) -> Response {
    super::api_change(web, peer, headers, move |web, session| {
        session.call(&web.store, Request::Admin(request(op)?))?;
        Ok(())
    })
    .await
}
