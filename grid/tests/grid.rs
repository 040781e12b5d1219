//! The compositor end to end in virtual time: libvpx-encoded cameras in, the shared grid
//! stream out, decoded by a libvpx viewer and checked tile by tile.

mod common;

use common::*;
use std::time::Duration;
use video_grid::picture::Yuv;
use video_grid::{Compositor, CompositorConfig, SourceId};

const TICK: Duration = Duration::from_millis(66);

/// Cameras send one frame and the grid ticks every 66 ms, `steps` times from `*now`.
fn run(
    grid: &mut Compositor,
    cams: &mut [(SourceId, Camera)],
    viewer: &mut Viewer,
    now: &mut Duration,
    steps: usize,
) {
    for _ in 0..steps {
        send_all(grid, cams, *now, false);
        grid.handle_tick(*now).unwrap();
        viewer.drain(grid);
        *now += TICK;
    }
}

fn three_cameras(grid: &mut Compositor, viewer: &mut Viewer) -> Vec<(SourceId, Camera)> {
    let mut cams = vec![
        (1, Camera::new(0x111, Yuv::RED)),
        (2, Camera::new(0x222, Yuv::BLUE)),
        (3, Camera::new(0x333, Yuv::GREEN)),
    ];
    for (id, _) in &cams {
        grid.add_source(*id, Duration::ZERO).unwrap();
    }
    viewer.drain(grid);
    assert_eq!(
        viewer.keyframe_requests,
        vec![1, 2, 3],
        "new sources are asked"
    );
    viewer.keyframe_requests.clear();
    // Every camera starts with its keyframe.
    send_all(grid, &mut cams, Duration::ZERO, true);
    cams
}

#[test]
fn two_by_two_shows_each_source_the_speaker_framed_and_the_empty_tile_black() {
    let mut grid = grid();
    let mut viewer = Viewer::new();
    let mut cams = three_cameras(&mut grid, &mut viewer);
    grid.set_speaker(Some(2));
    let mut now = Duration::ZERO;
    grid.handle_tick(now).unwrap();
    viewer.drain(&mut grid);
    now += TICK;
    run(&mut grid, &mut cams, &mut viewer, &mut now, 10);

    // One encode per tick, the first a keyframe, picture IDs counted, 90 kHz timestamps.
    assert_eq!(viewer.frames.len(), 11);
    assert!(viewer.frames[0].keyframe);
    assert!(viewer.frames[1..].iter().all(|f| !f.keyframe));
    for (i, f) in viewer.frames.iter().enumerate() {
        assert_eq!(f.picture_id, i as u16);
        assert_eq!(f.rtp_timestamp, 66 * 90 * i as u32);
        assert_eq!((f.image.width(), f.image.height()), (640, 360));
    }
    assert!(viewer.keyframe_requests.is_empty(), "no loss, no request");

    let layout = grid.layout();
    assert_eq!(layout.columns(), 2);
    assert_eq!(grid.tile_sources(), vec![Some(1), Some(2), Some(3), None]);
    let img = viewer.last();
    let colours = [Yuv::RED, Yuv::BLUE, Yuv::GREEN];
    for (i, c) in colours.iter().enumerate() {
        let tile = layout.tile(i).unwrap();
        let m = mean(img, centre(tile));
        assert!(m.distance(*c) < TOLERANCE, "tile {i}: {m:?} vs {c:?}");
        // The top border band: highlight on the speaker's tile, picture elsewhere.
        let band = mean(img, top_band(tile, layout.border()));
        let want = if i == 1 { Yuv::HIGHLIGHT } else { *c };
        assert!(band.distance(want) < TOLERANCE, "tile {i} border: {band:?}");
    }
    let empty = mean(img, layout.tile(3).unwrap());
    assert!(empty.distance(Yuv::BLACK) < 3.0, "empty tile {empty:?}");
    // Letterbox: the left bar of a 4:3 source in a 16:9 tile is black.
    let t0 = layout.tile(0).unwrap();
    let bar = video_grid::picture::Rect {
        x: t0.x + 4,
        y: t0.y + 20,
        width: 28,
        height: t0.height - 40,
    };
    assert!(mean(img, bar).distance(Yuv::BLACK) < 6.0);

    // The speaker moves: the highlight follows.
    grid.set_speaker(Some(3));
    run(&mut grid, &mut cams, &mut viewer, &mut now, 3);
    let img = viewer.last();
    let b2 = mean(img, top_band(layout.tile(2).unwrap(), layout.border()));
    let b1 = mean(img, top_band(layout.tile(1).unwrap(), layout.border()));
    assert!(b2.distance(Yuv::HIGHLIGHT) < TOLERANCE, "{b2:?}");
    assert!(b1.distance(Yuv::BLUE) < TOLERANCE, "{b1:?}");
}

#[test]
fn five_sources_make_a_three_by_three_grid() {
    let mut grid = grid();
    let mut viewer = Viewer::new();
    let colours = [
        Yuv::RED,
        Yuv::BLUE,
        Yuv::GREEN,
        Yuv::HIGHLIGHT,
        Yuv::from_rgb(255, 255, 255),
    ];
    let mut cams: Vec<(SourceId, Camera)> = colours
        .iter()
        .enumerate()
        .map(|(i, c)| (i as u64 + 10, Camera::new(i as u32 + 1, *c)))
        .collect();
    for (id, _) in &cams {
        grid.add_source(*id, Duration::ZERO).unwrap();
    }
    send_all(&mut grid, &mut cams, Duration::ZERO, true);
    let mut now = Duration::ZERO;
    run(&mut grid, &mut cams, &mut viewer, &mut now, 6);
    let layout = grid.layout();
    assert_eq!(layout.columns(), 3);
    let img = viewer.last();
    for (i, c) in colours.iter().enumerate() {
        let m = mean(img, centre(layout.tile(i).unwrap()));
        assert!(m.distance(*c) < TOLERANCE, "tile {i}: {m:?}");
    }
    for i in 5..9 {
        let m = mean(img, layout.tile(i).unwrap());
        assert!(m.distance(Yuv::BLACK) < 3.0, "tile {i}: {m:?}");
    }
}

#[test]
fn a_removed_source_leaves_a_black_tile() {
    let mut grid = grid();
    let mut viewer = Viewer::new();
    let mut cams = three_cameras(&mut grid, &mut viewer);
    let mut now = Duration::ZERO;
    run(&mut grid, &mut cams, &mut viewer, &mut now, 4);
    let tile = grid.layout().tile(1).unwrap();
    assert!(mean(viewer.last(), centre(tile)).distance(Yuv::BLUE) < TOLERANCE);

    assert!(grid.remove_source(2));
    assert!(!grid.remove_source(2));
    cams.retain(|(id, _)| *id != 2);
    run(&mut grid, &mut cams, &mut viewer, &mut now, 4);
    let img = viewer.last();
    assert!(mean(img, tile).distance(Yuv::BLACK) < 3.0);
    assert!(mean(img, centre(grid.layout().tile(0).unwrap())).distance(Yuv::RED) < TOLERANCE);
    // Its packets are now refused; a new source takes the free tile.
    let mut stray = Camera::new(0x222, Yuv::BLUE);
    assert!(grid.handle_rtp(2, &stray.frame(now, true)[0], now).is_err());
    assert_eq!(grid.add_source(4, now).unwrap(), 1);
}

#[test]
fn a_viewer_request_forces_a_keyframe_rate_limited() {
    let mut grid = grid();
    let mut viewer = Viewer::new();
    let mut cams = three_cameras(&mut grid, &mut viewer);
    let mut now = Duration::ZERO;
    run(&mut grid, &mut cams, &mut viewer, &mut now, 15); // 0 .. 924 ms
    assert_eq!(viewer.frames.iter().filter(|f| f.keyframe).count(), 1);

    // A request at 990 ms: the very next frame is a keyframe.
    let due = grid.request_keyframe(now);
    assert_eq!(due, now);
    let before = viewer.frames.len();
    run(&mut grid, &mut cams, &mut viewer, &mut now, 1);
    assert!(viewer.frames[before].keyframe);
    let kf_at = now - TICK;

    // A storm right after: served once, no earlier than 500 ms after that keyframe.
    for _ in 0..50 {
        assert_eq!(
            grid.request_keyframe(now),
            kf_at + Duration::from_millis(500)
        );
    }
    let before = viewer.frames.len();
    run(&mut grid, &mut cams, &mut viewer, &mut now, 12);
    let keys: Vec<u32> = viewer.frames[before..]
        .iter()
        .filter(|f| f.keyframe)
        .map(|f| f.rtp_timestamp)
        .collect();
    // Ticks at 1056, 1122, ... : the first at or after 990 + 500 = 1490 is 1518 ms.
    assert_eq!(keys, vec![1518 * 90]);
}

#[test]
fn loss_in_one_source_freezes_its_tile_and_asks_it_for_a_keyframe() {
    let mut grid = grid();
    let mut viewer = Viewer::new();
    let mut cams = three_cameras(&mut grid, &mut viewer);
    let mut now = Duration::ZERO;
    // Past the rate limit of the join-time keyframe requests.
    run(&mut grid, &mut cams, &mut viewer, &mut now, 10);
    let layout = grid.layout();
    let (t_red, t_blue) = (layout.tile(0).unwrap(), layout.tile(1).unwrap());

    // Source 1 loses a frame (its first packet, here its only one); then both source 1 and source 2 change
    // colour (interframes).
    let lost = cams[0].1.frame(now, false);
    for p in &lost[1..] {
        grid.handle_rtp(1, p, now).unwrap();
    }
    for (id, cam) in cams.iter_mut().skip(1) {
        for p in cam.frame(now, false) {
            grid.handle_rtp(*id, &p, now).unwrap();
        }
    }
    grid.handle_tick(now).unwrap();
    viewer.drain(&mut grid);
    now += TICK;
    cams[0].1.colour = Yuv::from_rgb(255, 255, 255);
    cams[1].1.colour = Yuv::from_rgb(255, 255, 0);
    run(&mut grid, &mut cams, &mut viewer, &mut now, 5);

    let img = viewer.last();
    let red_tile = mean(img, centre(t_red));
    assert!(
        red_tile.distance(Yuv::RED) < TOLERANCE,
        "frozen: {red_tile:?}"
    );
    let blue_tile = mean(img, centre(t_blue));
    assert!(
        blue_tile.distance(Yuv::from_rgb(255, 255, 0)) < TOLERANCE,
        "the other source continues: {blue_tile:?}"
    );
    // Asked once (the next request only after 500 ms), and only source 1.
    assert_eq!(viewer.keyframe_requests, vec![1]);
    run(&mut grid, &mut cams, &mut viewer, &mut now, 4);
    assert_eq!(
        viewer.keyframe_requests,
        vec![1, 1],
        "repeated while waiting"
    );

    // The keyframe arrives: the tile is live again, with the new colour.
    for p in cams[0].1.frame(now, true) {
        grid.handle_rtp(1, &p, now).unwrap();
    }
    grid.handle_tick(now).unwrap();
    viewer.drain(&mut grid);
    now += TICK;
    run(&mut grid, &mut cams, &mut viewer, &mut now, 2);
    let m = mean(viewer.last(), centre(t_red));
    assert!(
        m.distance(Yuv::from_rgb(255, 255, 255)) < TOLERANCE,
        "{m:?}"
    );
    assert_eq!(viewer.keyframe_requests.len(), 2, "no more requests");
}

#[test]
fn resume_continues_picture_ids_with_a_keyframe_and_asks_every_source() {
    let mut grid = grid();
    let mut viewer = Viewer::new();
    let mut cams = three_cameras(&mut grid, &mut viewer);
    grid.set_speaker(Some(3));
    let mut now = Duration::ZERO;
    run(&mut grid, &mut cams, &mut viewer, &mut now, 5);
    let snap = grid.snapshot();
    assert_eq!(snap.next_picture_id, 5);
    assert_eq!(snap.tiles, vec![Some(1), Some(2), Some(3), None]);
    drop(grid);

    // The standby takes over; the viewer keeps its decoder (one continuous stream).
    let mut standby = Compositor::resume(CompositorConfig::default(), &snap, now).unwrap();
    viewer.keyframe_requests.clear();
    viewer.drain(&mut standby);
    assert_eq!(
        viewer.keyframe_requests,
        vec![1, 2, 3],
        "every source asked at once"
    );
    let before = viewer.frames.len();
    standby.handle_tick(now).unwrap();
    viewer.drain(&mut standby);
    let first = &viewer.frames[before];
    assert!(first.keyframe);
    assert_eq!(first.picture_id, 5);
    // The sources' keyframes come in: the grid is back, speaker still framed.
    now += TICK;
    send_all(&mut standby, &mut cams, now, true);
    run(&mut standby, &mut cams, &mut viewer, &mut now, 3);
    let layout = standby.layout();
    let img = viewer.last();
    assert!(mean(img, centre(layout.tile(1).unwrap())).distance(Yuv::BLUE) < TOLERANCE);
    let band = mean(img, top_band(layout.tile(2).unwrap(), layout.border()));
    assert!(band.distance(Yuv::HIGHLIGHT) < TOLERANCE, "{band:?}");
    assert_eq!(viewer.frames.last().unwrap().picture_id, 8);
}

#[test]
fn sources_are_checked() {
    let mut grid = grid();
    for id in 0..9 {
        assert_eq!(grid.add_source(id, Duration::ZERO).unwrap(), id as usize);
    }
    assert!(matches!(
        grid.add_source(9, Duration::ZERO),
        Err(video_grid::Error::TooManySources)
    ));
    assert!(matches!(
        grid.add_source(3, Duration::ZERO),
        Err(video_grid::Error::DuplicateSource(3))
    ));
    assert!(Compositor::new(CompositorConfig {
        width: 641,
        ..Default::default()
    })
    .is_err());
}
