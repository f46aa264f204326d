//! `shelf admin …`: account management over the protocol, for admins (the server refuses
//! everyone else). Admins see accounts, usage and the audit log, never other users' files.

use super::account::{self, server_error};
use anyhow::bail;
use shelf::config::Login;
use shelf::remote::Remote;
use shelf_protocol::{AdminRequest, Role};

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Every account: role, bytes stored, quota.
    Users,
    /// Add an account (password from SHELF_PASSWORD, else prompted).
    Add {
        name: String,
        #[arg(long, default_value = "user")]
        role: Role,
    },
    /// Delete an account and everything it stored.
    Del { name: String },
    /// Change an account's role.
    Role { name: String, role: Role },
    /// Set an account's password (from SHELF_PASSWORD, else prompted); its devices must
    /// log in again.
    Passwd { name: String },
    /// Set the most an account may store, in GiB, or --none.
    Quota {
        name: String,
        #[arg(long, conflicts_with = "none")]
        gib: Option<f64>,
        #[arg(long)]
        none: bool,
    },
    /// The newest audit log entries, optionally only one user's or one kind's.
    Audit {
        #[arg(long, default_value_t = 50)]
        last: u32,
        /// Only entries about this account.
        #[arg(long)]
        user: Option<String>,
        /// Only entries whose kind starts with this (login, login-failed, link-,
        /// alert-security…).
        #[arg(long)]
        kind: Option<String>,
    },
}

fn remote() -> anyhow::Result<Remote> {
    let login = Login::load()?;
    Ok(account::connect(&login)?.0)
}

/// An administrator's request that answers only "done".
fn call(req: AdminRequest) -> anyhow::Result<()> {
    remote()?.admin(req).map_err(server_error)
}

pub fn admin(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Users => {
            let users = remote()?.admin_users().map_err(server_error)?;
            println!("{:<24}  {:<7}  {:>14}  QUOTA", "USER", "ROLE", "STORED");
            for u in users {
                let quota = u.quota.map_or_else(|| "none".to_string(), super::human);
                println!(
                    "{:<24}  {:<7}  {:>14}  {quota}",
                    u.name,
                    u.role.to_string(),
                    super::human(u.stored_bytes)
                );
            }
        }
        AdminCommand::Add { name, role } => {
            let password = account::password(&format!("Password for {name}: "))?;
            call(AdminRequest::AddUser {
                name: name.clone(),
                password,
                role,
            })?;
            println!("added {name} ({role})");
        }
        AdminCommand::Del { name } => {
            call(AdminRequest::DeleteUser { name: name.clone() })?;
            println!("deleted {name} and everything it stored");
        }
        AdminCommand::Role { name, role } => {
            call(AdminRequest::SetRole {
                name: name.clone(),
                role,
            })?;
            println!("{name} is now {role}");
        }
        AdminCommand::Passwd { name } => {
            let password = account::password(&format!("New password for {name}: "))?;
            call(AdminRequest::SetPassword {
                name: name.clone(),
                password,
            })?;
            println!("changed the password of {name}; its devices must log in again");
        }
        AdminCommand::Quota { name, gib, none } => {
            let bytes = match (gib, none) {
                (_, true) => None,
                (Some(g), false) if g >= 0.0 => Some((g * (1u64 << 30) as f64) as u64),
                _ => bail!("give --gib N or --none"),
            };
            call(AdminRequest::SetQuota {
                name: name.clone(),
                bytes,
            })?;
            match bytes {
                Some(b) => println!("{name}: quota {}", super::human(b)),
                None => println!("{name}: no quota"),
            }
        }
        AdminCommand::Audit { last, user, kind } => {
            let lines = remote()?
                .admin_audit(last, user, kind)
                .map_err(server_error)?;
            for l in lines {
                println!(
                    "{}  {:<18}  {:<16}  {:<24}  {}",
                    super::history::utc(l.at.secs),
                    l.what,
                    l.user,
                    l.from,
                    l.detail
                );
            }
        }
    }
    Ok(())
}
