//! SIGHUP: re-read main.cf and master.cf. On an error the old configuration stays in force
//! (and the error is logged with its `file:line`). Otherwise the generation is bumped,
//! every current worker is asked to exit (idle ones go at once, busy ones after their
//! client), removed services are closed, added ones opened, and endpoints whose address
//! changed are re-bound; unchanged endpoints stay open, so no client is refused.

use crate::conf;
use crate::listen;
use crate::service::ServiceState;
use crate::supervisor::Supervisor;
use oxipost_log::{error, info, warning};

pub fn reload(sup: &mut Supervisor) {
    let (dir, explicit) = (
        sup.settings().config_dir.clone(),
        sup.settings().explicit_dir,
    );
    let new = match conf::load(&dir, explicit) {
        Ok(n) => n,
        Err(e) => {
            error!("reload: {e}; keeping the old configuration");
            return;
        }
    };
    let old = &sup.loaded.settings;
    if new.settings.data_directory != old.data_directory
        || new.settings.pid_file != old.pid_file
        || new.settings.queue_directory != old.queue_directory
    {
        warning!(
            "reload: queue_directory, data_directory and process_id_directory take effect at the next start"
        );
    }
    let mut settings = new.settings.clone();
    settings.data_directory = old.data_directory.clone();
    settings.pid_file = old.pid_file.clone();
    crate::init_logging(&settings, false);
    sup.generation = sup.generation.wrapping_add(1);
    let owner = settings.owner;
    sup.loaded.settings = settings;

    // Pass 1: remove services that are gone, retire the workers of the rest, close
    // endpoints that changed.
    let ids: Vec<usize> = sup.services.keys().copied().collect();
    let mut reopen = Vec::new();
    for id in ids {
        let key = sup.services[&id].key();
        let Some(conf) = new.services.iter().find(|c| c.key() == key).cloned() else {
            if let Some(s) = sup.remove_service(id)
                && let Some(p) = s.conf.endpoint.path()
            {
                let _ = std::fs::remove_file(p);
            }
            info!("reload: service {key} removed");
            continue;
        };
        sup.set_listening(id, false);
        let Some(mut s) = sup.services.remove(&id) else {
            continue;
        };
        sup.retire_children(&mut s);
        s.throttled_until = None;
        if s.conf.endpoint != conf.endpoint {
            s.listen.clear();
            reopen.push(id);
            info!("reload: service {key}: endpoint changed");
        }
        if s.conf.entry.wakeup != conf.entry.wakeup {
            s.next_wakeup = conf.entry.wakeup.map(|w| {
                std::time::Instant::now() + std::time::Duration::from_secs(u64::from(w.seconds))
            });
        }
        s.conf = conf;
        sup.services.insert(id, s);
    }
    // Pass 2: bind changed endpoints (the old ones are closed by now).
    for id in reopen {
        if let Some(s) = sup.services.get_mut(&id) {
            match listen::open(&s.conf.endpoint, owner) {
                Ok(fds) => s.listen = fds,
                Err(e) => error!("reload: service {}: {e}", s.key()),
            }
        }
    }
    // Pass 3: services that are new.
    for conf in new.services.iter() {
        let key = conf.key();
        if sup.services.values().any(|s| s.key() == key) {
            continue;
        }
        let mut s = match ServiceState::new(conf.clone()) {
            Ok(s) => s,
            Err(e) => {
                error!("reload: service {key}: {e}");
                continue;
            }
        };
        match listen::open(&conf.endpoint, owner) {
            Ok(fds) => s.listen = fds,
            Err(e) => error!("reload: service {key}: {e}"),
        }
        if let Err(e) = sup.add_service(s) {
            error!("reload: service {key}: {e}");
            continue;
        }
        info!("reload: service {key} added");
    }
    sup.loaded.services = new.services;
    info!(
        "reload -- version {}, configuration {}",
        env!("CARGO_PKG_VERSION"),
        dir.display()
    );
}
