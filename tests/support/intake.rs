//! `mp-resolver intake` in-process on free ports, for the HTTP and browser tests.

use std::net::SocketAddr;

use std::sync::Arc;

use mp_resolver::config::Settings;
use mp_resolver::intake::telemetry::IntakeTelemetry;
use mp_resolver::intake::Intake;
use tokio::net::TcpListener;

use super::Fixture;

/// A sign-up page with a query and a fragment of its own, both of which must survive.
pub const REGISTRATION: &str = "https://seller.example/signup?plan=gold&ref=a%20b#form";

pub struct RunningIntake {
    pub base: String,
    pub admin: SocketAddr,
    pub telemetry: Arc<IntakeTelemetry>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningIntake {
    pub async fn start(sqs: aws_sdk_sqs::Client, settings: &Settings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let admin = admin_listener.local_addr().unwrap();
        let intake = Intake::new(sqs, settings).expect("intake settings");
        let telemetry = intake.telemetry().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(intake.run(listener, admin_listener, async {
            let _ = stopped.await;
        }));
        RunningIntake {
            base,
            admin,
            telemetry,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        mp_resolver::observe::admin::http_get(self.admin, path)
            .await
            .expect("admin listener answers")
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

pub fn intake_settings(fx: &Fixture, edit: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = fx.settings.clone();
    settings.intake.registration_url = REGISTRATION.to_owned();
    settings.intake.readiness_interval_secs = 1;
    edit(&mut settings);
    settings
}
