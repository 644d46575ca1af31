drop trigger sequencer_watermarks_notify on sequencer_watermarks;
drop function syncline_notify_watermark();
