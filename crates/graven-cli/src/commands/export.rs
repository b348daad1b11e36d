//! `graven export`: an artifact as a byte-identical archive.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use graven::export::Format;

use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Write an artifact as an archive
///
/// The archive is byte-identical for the same artifact on any machine:
/// entries sorted, owner 0, one constant modification time, normalised modes,
/// fixed compression levels. Its checksum can be published and checked.
///
/// Examples:
///   graven export HEAD --format tar.zst -o app.tar.zst
///   graven export 3f9c2a1 --format tar -o - | tar -t
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct ExportArgs {
    /// The build: an artifact id, a unique prefix of 7+ hex digits, or a commit
    build: String,

    /// The archive format
    #[arg(long, value_enum)]
    format: ExportFormat,

    /// Where to write the archive; `-` for stdout
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    /// Uncompressed tar
    Tar,
    /// tar compressed with gzip (level 6)
    #[value(name = "tar.gz")]
    TarGz,
    /// tar compressed with zstd (level 3)
    #[value(name = "tar.zst")]
    TarZst,
}

impl From<ExportFormat> for Format {
    fn from(format: ExportFormat) -> Self {
        match format {
            ExportFormat::Tar => Format::Tar,
            ExportFormat::TarGz => Format::TarGz,
            ExportFormat::TarZst => Format::TarZst,
        }
    }
}

pub(crate) fn cmd_export(settings: &Settings, args: &ExportArgs) -> Result<(), CommandError> {
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let record = graven::build::resolve_build(ledger, &app, settings.repo.as_ref(), &args.build)?;
    let id = record.build.artifact;
    let format = Format::from(args.format);
    if args.output.as_os_str() == "-" {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            return Err(CommandError::bad_input("refusing to write an archive to a terminal")
                .hint("redirect stdout (-o - > app.tar, or | tar -t), or give a file with -o PATH"));
        }
        let stdout = std::io::stdout().lock();
        graven::export::export(store, &id, format, std::io::BufWriter::new(stdout)).map_err(CommandError::failed)?;
        return Ok(());
    }
    let summary = graven::export::export_to_path(store, &id, format, &args.output).map_err(CommandError::failed)?;
    ui::note(format!(
        "exported {} to {} — {} entries, {}",
        id.short(),
        args.output.display(),
        ui::count(summary.entries),
        ui::bytes(summary.bytes)
    ));
    Ok(())
}
