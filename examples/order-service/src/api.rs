//! The HTTP API: orders are created, looked up in the catalog, and sent
//! through notification, reservation and shipping steps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::catalog::Catalog;
use crate::notifications::Watchers;
use crate::reservations::Reservations;
use crate::shipping::Dispatcher;

/// An order as the API takes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Order {
    pub customer: String,
    pub items: Vec<Line>,
    #[serde(default)]
    pub note: String,
}

/// One line of an order.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Line {
    pub sku: u64,
    pub quantity: u32,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    next_id: Arc<AtomicU64>,
    catalog: Arc<Catalog>,
    watchers: Arc<Watchers>,
    reservations: Arc<Reservations>,
    dispatcher: Arc<Dispatcher>,
}

impl AppState {
    pub fn new(upstream: Option<SocketAddr>) -> AppState {
        AppState {
            next_id: Arc::new(AtomicU64::new(1)),
            catalog: Arc::new(Catalog::with_capacity(12_000)),
            watchers: Arc::new(Watchers::default()),
            reservations: Arc::new(Reservations::default()),
            dispatcher: Arc::new(Dispatcher::new(upstream)),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/orders", post(create))
        .route("/items/{sku}", get(item))
        .route("/orders/{id}/notify", post(notify))
        .route("/orders/{id}/reserve", post(reserve))
        .route("/orders/{id}/ship", post(ship))
        .with_state(state)
}

#[derive(Serialize)]
struct Created {
    id: u64,
    total_items: u32,
}

async fn create(State(s): State<AppState>, Json(order): Json<Order>) -> Json<Created> {
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let total_items = order.items.iter().map(|l| l.quantity).sum();
    audit::remember(id, &order);
    Json(Created { id, total_items })
}

async fn item(State(s): State<AppState>, Path(sku): Path<u64>) -> String {
    let entry = s.catalog.lookup(sku);
    format!("sku {sku}: {} bytes of description\n", entry.len())
}

async fn notify(State(s): State<AppState>, Path(id): Path<u64>) -> Result<String, StatusCode> {
    s.watchers
        .watch(id)
        .map(|()| format!("watching order {id}\n"))
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

async fn reserve(State(s): State<AppState>, Path(id): Path<u64>) -> String {
    s.reservations.hold(id);
    format!("order {id} reserved\n")
}

async fn ship(
    State(s): State<AppState>,
    Path(id): Path<u64>,
) -> Result<String, (StatusCode, String)> {
    s.dispatcher
        .dispatch(id)
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{e}\n")))?;
    s.watchers.shipped(id);
    Ok(format!("order {id} handed to the carrier\n"))
}
